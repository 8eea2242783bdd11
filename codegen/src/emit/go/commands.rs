//! Emits `commands.go` for a saga with entry commands: per command its struct, per
//! service that executes commands an interface with a method per command, and
//! `Run<Command>`, which runs one in the caller's transaction as the Rust crate's
//! `run_<command>_keyed` does: the service's method, then the saga's first status and the
//! event that starts it (`runtime-go/owner`'s `Start`), which carries the saga context and
//! the initial status's deadline.

use super::names;
use super::text::{Line, aligned, comment, comment_lines};
use super::types::go_type;
use crate::ir::Saga;

pub(super) fn declarations(saga: &Saga) -> String {
    let Some(machine) = &saga.status else { return String::new() };
    let status = names::status_type(&machine.owner);
    let key = names::exported(&saga.key);
    let lower = names::unexported(&key);
    let mut out = String::new();
    let mut services: Vec<&str> = Vec::new();
    for c in &saga.commands {
        let name = names::exported(&c.name);
        let doc = c.doc.as_deref().unwrap_or("");
        out.push('\n');
        out.push_str(&comment(
            "",
            &format!(
                "{}\n\nExecuted by `{}`; emits `{}`.",
                format!("{name} is entry command `{}`. {doc}", c.name).trim_end(),
                c.service,
                c.emits
            ),
        ));
        let mut rows = Vec::new();
        for f in &c.fields {
            rows.extend(f.doc.as_deref().map(comment_lines).unwrap_or_default());
            rows.push(Line::Row(vec![names::exported(&f.name), go_type(&f.ty)]));
        }
        out.push_str(&if rows.is_empty() {
            format!("type {name} struct{{}}\n")
        } else {
            format!("type {name} struct {{\n{}}}\n", aligned(&rows))
        });
        if !services.contains(&c.service.as_str()) {
            services.push(&c.service);
        }
    }
    for service in services {
        let svc = names::exported(service);
        let mut methods = String::new();
        for c in saga.commands.iter().filter(|c| c.service == service) {
            let name = names::exported(&c.name);
            let event = names::exported(&c.emits);
            methods.push_str(&comment(
                "\t",
                &format!(
                    "{name} executes `{}` for a new saga keyed {lower}: the `{}` payload to publish.",
                    c.name, c.emits
                ),
            ));
            methods.push_str(&format!(
                "\t{name}(ctx context.Context, tx pgx.Tx, {lower} uuid.UUID, command {name}) ({event}, error)\n"
            ));
        }
        out.push_str(&format!(
            "\n// {svc}Commands is the entry commands `{service}` executes.\ntype {svc}Commands interface {{\n{methods}}}\n"
        ));
        for c in saga.commands.iter().filter(|c| c.service == service) {
            let name = names::exported(&c.name);
            let event = names::exported(&c.emits);
            let context = saga
                .context
                .as_ref()
                .map(|ctx| {
                    let fields: Vec<String> =
                        ctx.fields.iter().map(|f| format!("{0}: command.{0}", names::exported(&f.name))).collect();
                    format!("\te.Context = &SagaContext{{{}}}\n", fields.join(", "))
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "\n// Run{name} runs `{}` in tx for the new saga {lower}: h executes it, then the saga's first\n\
                 // status ({initial}) is written with its history row and `{}` goes to the outbox, in the\n\
                 // trace given, with the saga context and the deadline of {initial}.\n\
                 func Run{name}(ctx context.Context, tx pgx.Tx, o *owner.Owner[{status}], h {svc}Commands, {lower} uuid.UUID, command {name}, traceparent, tracestate *string) (*Envelope[{event}], error) {{\n\
                 \tpayload, err := h.{name}(ctx, tx, {lower}, command)\n\
                 \tif err != nil {{\n\t\treturn nil, err\n\t}}\n\
                 \te := New({lower}, payload)\n\
                 \te.Traceparent, e.Tracestate = traceparent, tracestate\n\
                 \te.Deadline = o.Deadline(o.Machine.Initial)\n\
                 {context}\
                 \treturn e, o.Start(ctx, tx, e)\n}}\n",
                c.name,
                c.emits,
                initial = names::status(&machine.owner, &machine.initial),
            ));
        }
    }
    out
}
