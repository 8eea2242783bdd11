//! `compensations:` on an event, a service undoes the local effect of an event it published
//! earlier.

use super::{Cx, Names};
use crate::diagnostics::SpecError;
use crate::ir;
use crate::parse;
use crate::path;

pub(super) fn check(cx: &mut Cx<'_>, spec: &parse::Spec, names: &Names<'_>) -> Vec<ir::Compensation> {
    let mut compensations = Vec::new();
    for (i, c) in spec.compensations.iter().enumerate() {
        let on_at = cx.val(&path!["compensations", i, "on"]);
        let svc_at = cx.val(&path!["compensations", i, "service"]);
        let undoes_at = cx.val(&path!["compensations", i, "undoes"]);
        if !names.services.contains(&c.service.as_str()) {
            cx.unknown("service", &c.service, svc_at, &names.services);
        }
        match spec.events.0.iter().find(|(n, _)| *n == c.on) {
            None => cx.unknown("event", &c.on, on_at, &names.events),
            Some((_, ev)) if !ev.subscribers.0.iter().any(|(s, _)| *s == c.service) => cx.err(
                SpecError::new(
                    "spec::not_subscribed",
                    format!("compensation on `{}` runs in `{}`, which does not subscribe to it", c.on, c.service),
                )
                .label(on_at, "never delivered to that service")
                .help(format!("add `{}` to the subscribers of `{}`", c.service, c.on)),
            ),
            Some(_) => {}
        }
        match spec.events.0.iter().find(|(n, _)| *n == c.undoes) {
            None => cx.unknown("event", &c.undoes, undoes_at, &names.events),
            Some((_, ev)) if ev.publisher != c.service => cx.err(
                SpecError::new(
                    "spec::compensation_undoes_nothing",
                    format!(
                        "compensation in `{}` undoes `{}`, which `{}` never published",
                        c.service, c.undoes, c.service
                    ),
                )
                .label(undoes_at, format!("published by `{}`", ev.publisher))
                .help("a service can only undo its own local transaction; undo an event it publishes"),
            ),
            Some((_, ev)) if ev.outcome.as_deref() == Some("failure") => cx.err(
                SpecError::new(
                    "spec::compensation_undoes_nothing",
                    format!("compensation undoes `{}`, a failure outcome that changed nothing", c.undoes),
                )
                .label(undoes_at, "marked `outcome: failure`")
                .help("drop this compensation: there is no state to restore"),
            ),
            Some((_, ev)) if ev.effect.as_ref().and_then(|x| x.holds.as_ref()).is_none() => cx.err(
                SpecError::new(
                    "spec::compensation_undoes_nothing",
                    format!("compensation undoes `{}`, which declares nothing it holds", c.undoes),
                )
                .label(undoes_at, "no `effect: { holds: ... }` on this event")
                .help(format!(
                    "declare what `{}` holds, e.g. `effect: {{ holds: reservation }}`, so `verify` can prove it is given back",
                    c.undoes
                )),
            ),
            Some(_) => {}
        }
        compensations.push(ir::Compensation {
            on: c.on.clone(),
            service: c.service.clone(),
            undoes: c.undoes.clone(),
            tombstone: c.tombstone,
        });
    }
    compensations
}
