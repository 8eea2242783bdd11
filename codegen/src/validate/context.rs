//! `context:` saga data that the command starting a saga says and a later step reads,
//! carried by every reply so that the steps between need not pass it on. Its fields come
//! from the entry command by name; each reader names the events it reads it on, and each
//! of those must carry it on every path (`ir::Saga::context_carriers`).

use super::types::fields_of;
use super::{Cx, Names};
use crate::diagnostics::SpecError;
use crate::ir;
use crate::parse;
use crate::path;

pub(super) fn check(
    cx: &mut Cx<'_>,
    spec: &parse::Spec,
    names: &Names<'_>,
    commands: &[ir::Command],
) -> Option<ir::Context> {
    let c = spec.context.as_ref()?;
    let base = path!["context"];
    let fields = fields_of(cx, &base, &c.fields, names);
    if names.types.contains(&ir::CONTEXT_TYPE) {
        let at = cx.key(&path!["types", ir::CONTEXT_TYPE]);
        cx.err(
            SpecError::new("spec::reserved_name", format!("type `{}` clashes with the saga context", ir::CONTEXT_TYPE))
                .label(at, "declared here")
                .help(format!("`{}` is the record of `context:`; rename this type", ir::CONTEXT_TYPE)),
        );
    }
    if commands.is_empty() {
        let at = cx.key(&base);
        cx.err(
            SpecError::new("spec::context_without_command", "the saga context has nothing to set it")
                .label(at, "its fields come from the command that starts the saga")
                .help("declare the entry command under `commands:`, or remove `context:`"),
        );
    }
    for f in &fields {
        let at = cx.key(&path!["context", "fields", f.name.as_str()]);
        for cmd in commands {
            match cmd.fields.iter().find(|cf| cf.name == f.name) {
                Some(cf) if cf.ty == f.ty => {}
                found => cx.err(
                    SpecError::new(
                        "spec::context_not_in_command",
                        format!("context field `{}` is not a field of command `{}`", f.name, cmd.name),
                    )
                    .label(
                        at,
                        match found {
                            Some(_) => format!("`{}` has a field `{}` of another type", cmd.name, f.name),
                            None => format!("`{}` has no field `{}`", cmd.name, f.name),
                        },
                    )
                    .help(format!(
                        "the context is copied from the command that starts the saga: give `{}` a field `{}` of the same type, or remove it from the context",
                        cmd.name, f.name
                    )),
                ),
            }
        }
    }
    let mut read_by = Vec::new();
    for (service, events) in &c.read_by.0 {
        if !names.services.contains(&service.as_str()) {
            let at = cx.key(&path!["context", "read_by", service.as_str()]);
            cx.unknown("service", service, at, &names.services);
            continue;
        }
        for (i, event) in events.iter().enumerate() {
            let at = cx.val(&path!["context", "read_by", service.as_str(), i]);
            match spec.events.0.iter().find(|(n, _)| n == event) {
                None => cx.unknown("event", event, at, &names.events),
                Some((_, e)) if !e.subscribers.0.iter().any(|(s, _)| s == service) => cx.err(
                    SpecError::new(
                        "spec::context_reader_not_subscribed",
                        format!("`{service}` reads the context on `{event}`, which it does not receive"),
                    )
                    .label(at, format!("`{service}` is not a subscriber of `{event}`"))
                    .help(format!("add `{service}` to the subscribers of `{event}`, or remove this read")),
                ),
                Some(_) => {
                    read_by.push(ir::ContextRead { service: service.clone(), event: event.clone(), without: None })
                }
            }
        }
    }
    for (service, events) in &c.without.0 {
        for (event, reply) in &events.0 {
            let at = cx.key(&path!["context", "without", service.as_str(), event.as_str()]);
            let Some(read) = read_by.iter_mut().find(|r| r.service == *service && r.event == *event) else {
                cx.err(
                    SpecError::new(
                        "spec::context_without_unread",
                        format!("`context.without` says what `{service}` replies to `{event}` without the context, but it does not read the context there"),
                    )
                    .label(at, "not under `context.read_by`")
                    .help(format!("add `{event}` to `context.read_by.{service}`, or remove this entry")),
                );
                continue;
            };
            let replies: Vec<&str> = spec
                .events
                .0
                .iter()
                .filter(|(n, _)| n == event)
                .flat_map(|(_, e)| e.subscribers.0.iter().filter(|(s, _)| s == service))
                .flat_map(|(_, r)| r.iter().flatten().map(String::as_str))
                .collect();
            if !replies.contains(&reply.as_str()) {
                let at = cx.val(&path!["context", "without", service.as_str(), event.as_str()]);
                cx.err(
                    SpecError::new(
                        "spec::context_without_not_a_reply",
                        format!("`{service}` cannot reply `{reply}` to `{event}`"),
                    )
                    .label(at, format!("not among its replies to `{event}`"))
                    .help(format!(
                        "name one of its replies: {}",
                        replies.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
                    )),
                );
                continue;
            }
            read.without = Some(reply.clone());
        }
    }
    Some(ir::Context { doc: c.doc.clone(), fields, read_by })
}

/// Every event whose handler reads the context carries it on every path to it: a reply
/// to a reply of the entry command, never an event a timeout emits.
pub(super) fn check_carried(cx: &mut Cx<'_>, saga: &ir::Saga) {
    let Some(context) = &saga.context else { return };
    let carriers = saga.context_carriers();
    for (i, read) in context.read_by.iter().enumerate() {
        if carriers.contains(read.event.as_str()) {
            continue;
        }
        let at = cx.val(&path!["context", "read_by", read.service.as_str(), index_in(context, i)]);
        let why = match saga
            .status
            .iter()
            .flat_map(|sm| &sm.states)
            .find(|s| s.timeout.as_ref().and_then(|t| t.emits.as_deref()) == Some(read.event.as_str()))
        {
            Some(state) => format!("a timeout of `{}` emits it, starting from no event", state.name),
            None => "a path to it starts from an event that carries none".to_string(),
        };
        cx.err(
            SpecError::new(
                "spec::context_not_carried",
                format!("`{}` reads the context on `{}`, which does not always carry it", read.service, read.event),
            )
            .label(at, why)
            .help(format!(
                "read the context only on events that replies carry from the entry command; give `{}` the fields it needs instead",
                read.event
            )),
        );
    }
}

/// The position of `read_by[i]` in its service's list as written.
fn index_in(context: &ir::Context, i: usize) -> usize {
    let service = &context.read_by[i].service;
    context.read_by[..i].iter().filter(|r| r.service == *service).count()
}
