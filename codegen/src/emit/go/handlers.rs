//! Emits `handlers.go`: per participant, a handler interface with one method per event it
//! subscribes to, whose reply type admits exactly the events the spec lets it publish in
//! reply (a sealed interface: any other event does not compile), and the binding that
//! hands the handler to the runtime (`participant.Binding`).

use super::names;
use super::text::{comment, quoted};
use crate::ir::Saga;

/// Services that handle events and do not own the status: the status owner's handlers
/// (with its status machine) are not in the Go target yet.
pub(super) fn participants(saga: &Saga) -> Vec<&str> {
    let owner = saga.status.as_ref().map(|s| s.owner.as_str());
    saga.services
        .iter()
        .map(|s| s.name.as_str())
        .filter(|s| Some(*s) != owner && saga.subscriptions(s).next().is_some())
        .collect()
}

fn replies_doc(replies: &[String]) -> String {
    if replies.is_empty() {
        "The spec allows no reply.".into()
    } else {
        let list: Vec<String> = replies.iter().map(|r| format!("`{r}`")).collect();
        format!("The spec allows these replies: {}.", list.join(", "))
    }
}

pub(super) fn declarations(saga: &Saga) -> String {
    let mut out = String::new();
    for service in participants(saga) {
        let svc = names::exported(service);
        let handler = format!("{svc}Handler");
        let quoted_service = quoted(service);
        let group = saga
            .services
            .iter()
            .filter(|s| saga.subscriptions(&s.name).next().is_some())
            .position(|s| s.name == service)
            .unwrap_or_default();

        // The reply type of each subscription, and which payloads implement it.
        let mut methods = String::new();
        let mut cases = String::new();
        for (event, sub) in saga.subscriptions(service) {
            let payload = names::exported(&event.name);
            let reply = format!("{svc}On{payload}");
            let marker = format!("{}On{payload}", names::unexported(&svc));
            out.push('\n');
            out.push_str(&comment(
                "",
                &format!(
                    "{reply} is what `{service}` may publish after `{}`: one of the replies the spec\nlists, or nil for none. {}",
                    event.name,
                    replies_doc(&sub.replies)
                ),
            ));
            out.push_str(&format!("type {reply} interface{{ {marker}() }}\n"));
            for r in &sub.replies {
                let r = names::exported(r);
                out.push_str(&format!("\nfunc ({r}) {marker}() {{}}\n"));
            }
            let compensates = saga
                .compensations
                .iter()
                .find(|c| c.on == event.name && c.service == service)
                .map(|c| format!("\n\nCompensation: undo `{}`.", c.undoes))
                .unwrap_or_default();
            methods.push_str(&comment(
                "\t",
                &format!(
                    "On{payload}: `{service}` received `{}` (topic `{}`). {}{compensates}",
                    event.name,
                    event.topic,
                    replies_doc(&sub.replies)
                ),
            ));
            methods.push_str(&format!(
                "\tOn{payload}(ctx context.Context, tx pgx.Tx, event *Envelope[{payload}]) ({reply}, error)\n"
            ));
            let reply_cases: String = sub
                .replies
                .iter()
                .map(|r| {
                    let r = names::exported(r);
                    format!("\t\t\tcase {r}:\n\t\t\t\treturn participant.NewOutbound(Reply(e, reply))\n")
                })
                .collect();
            // With no reply allowed, the reply type has no implementation: nothing to switch on.
            let switch = if sub.replies.is_empty() {
                String::new()
            } else {
                format!("\t\t\tswitch reply := r.(type) {{\n{reply_cases}\t\t\t}}\n")
            };
            cases.push_str(&format!(
                "\tcase *Envelope[{payload}]:\n\
                 \t\treturn participant.Handle(e, h.On{payload}, func(r {reply}) (*participant.Outbound, error) {{\n\
                 {switch}\
                 \t\t\treturn nil, participant.Undeclared({quoted_service}, r, e)\n\
                 \t\t}}), nil\n"
            ));
        }
        out.push('\n');
        out.push_str(&comment(
            "",
            &format!(
                "{handler} is everything `{service}` reacts to. Each method runs in the transaction\n\
                 that also records the event in the inbox and its reply in the outbox; its reply type\n\
                 admits exactly the events the spec lets `{service}` publish in reply."
            ),
        ));
        out.push_str(&format!("type {handler} interface {{\n{methods}}}\n"));
        out.push_str(&format!(
            "\n// {svc}Binding hands h to the runtime: the consumer group of `{service}`, the schemas it\n\
             // writes, and how each message it reads is decoded and handled.\n\
             func {svc}Binding(h {handler}) participant.Binding {{\n\
             \treturn saga.Bind({quoted_service}, ConsumerGroups[{group}], func(data []byte) (*participant.Inbound, error) {{\n\
             \t\treturn decode{svc}(h, data)\n\
             \t}})\n}}\n\
             \nfunc decode{svc}(h {handler}, data []byte) (*participant.Inbound, error) {{\n\
             \tm, err := DecodeMessage(data)\n\
             \tif errors.Is(err, wire.ErrLaterEvent) {{\n\
             \t\t// An event of a later version of the saga: no handler here knows it.\n\
             \t\treturn nil, nil\n\t}}\n\
             \tif err != nil {{\n\t\treturn nil, err\n\t}}\n\
             \tswitch e := m.(type) {{\n{cases}\t}}\n\
             \t// An event of a topic `{service}` reads that it does not handle.\n\
             \treturn nil, nil\n}}\n",
        ));
    }
    if !participants(saga).is_empty() {
        out.push_str(
            "\n// saga is what every service's binding shares.\n\
             var saga = participant.Saga{\n\
             \tSchemas:          schemas,\n\
             \tEvents:           Events,\n\
             \tLearn:            registry.Learn,\n\
             \tDeadLetterSuffix: DeadLetterSuffix,\n\
             \tSchemaTopic:      SchemaTopic,\n}\n",
        );
    }
    out
}
