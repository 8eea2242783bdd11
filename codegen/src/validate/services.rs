//! `services:` the list every other section names services from.

use super::{Cx, check_ident};
use crate::diagnostics::SpecError;
use crate::parse;
use crate::path;
use crate::spans::Span;

/// Checks the service names; returns where each is declared, for the IR built from `delivery`.
pub(super) fn check(cx: &mut Cx<'_>, spec: &parse::Spec) -> Vec<Span> {
    let spans: Vec<Span> = (0..spec.services.len()).map(|i| cx.val(&path!["services", i])).collect();
    cx.duplicates("service", spec.services.iter().map(String::as_str).zip(spans.iter().copied()));
    for (s, at) in spec.services.iter().zip(&spans) {
        check_ident(cx, "service", s, *at);
    }
    spans
}

/// Every service subscribes to some event: a service that receives nothing has no part in a
/// choreography (it could only publish from a command, and commands run on the status owner).
pub(super) fn check_subscribes(cx: &mut Cx<'_>, spec: &parse::Spec, spans: &[Span]) {
    for (s, at) in spec.services.iter().zip(spans) {
        let subscribes = spec.events.0.iter().any(|(_, e)| e.subscribers.0.iter().any(|(sub, _)| sub == s));
        if !subscribes {
            cx.err(
                SpecError::new("spec::idle_service", format!("service `{s}` subscribes to no event"))
                    .label(*at, "declared here, but no event lists it under `subscribers`")
                    .help(format!("add `{s}` to the subscribers of an event it reacts to, or remove it")),
            );
        }
    }
}
