//! `commands:` the entry commands that start a saga, each run by one service and emitting
//! one of its events. A command starts a saga instance, whose first status its status owner
//! records: so commands run on the status owner.

use super::types::fields_of;
use super::{Cx, Names, check_pascal};
use crate::diagnostics::SpecError;
use crate::ir;
use crate::parse;
use crate::path;

pub(super) fn check(cx: &mut Cx<'_>, spec: &parse::Spec, names: &Names<'_>) -> Vec<ir::Command> {
    let mut commands = Vec::new();
    for (name, c) in &spec.commands.0 {
        let base = path!["commands", name];
        let at = cx.key(&base);
        check_pascal(cx, "command", name, at, "command names look like `CreateOrder`");
        let service_at = cx.val(&path!["commands", name, "service"]);
        if !names.services.contains(&c.service.as_str()) {
            cx.unknown("service", &c.service, service_at, &names.services);
        } else {
            match &spec.status {
                Some(status) if status.owner != c.service => cx.err(
                    SpecError::new(
                        "spec::command_not_on_owner",
                        format!(
                            "command `{name}` runs on `{}`, but `{}` owns the saga's status",
                            c.service, status.owner
                        ),
                    )
                    .label(service_at, "a command starts a saga, whose first status its owner records")
                    .help(format!("run the command on `{}`", status.owner)),
                ),
                Some(_) => {}
                None => cx.err(
                    SpecError::new(
                        "spec::command_without_status",
                        format!("command `{name}` starts a saga no one keeps"),
                    )
                    .label(at, "here")
                    .help("declare `status:` with the service that owns the saga's status and runs its commands"),
                ),
            }
        }
        let emits_at = cx.val(&path!["commands", name, "emits"]);
        match spec.events.0.iter().find(|(n, _)| *n == c.emits) {
            None => cx.unknown("event", &c.emits, emits_at, &names.events),
            Some((_, ev)) if ev.publisher != c.service => cx.err(
                SpecError::new(
                    "spec::not_publisher",
                    format!(
                        "command `{name}` on `{}` emits `{}`, which is published by `{}`",
                        c.service, c.emits, ev.publisher
                    ),
                )
                .label(emits_at, format!("`{}` may not publish this", c.service))
                .help(format!("run the command on `{}` or emit an event `{}` publishes", ev.publisher, c.service)),
            ),
            Some(_) => {}
        }
        let fields = fields_of(cx, &base, &c.fields, names);
        commands.push(ir::Command {
            name: name.clone(),
            service: c.service.clone(),
            doc: c.doc.clone(),
            fields,
            emits: c.emits.clone(),
        });
    }
    commands
}
