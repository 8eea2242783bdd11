//! Emits `handlers.go`: per service that handles events, a handler interface with one
//! method per event it subscribes to, whose reply type admits exactly the events the spec
//! lets it publish in reply (a sealed interface: any other event does not compile), and
//! the binding that hands the handler to the runtime (`participant.Binding`). The status
//! owner's methods also get the step the status machine made (`owner.Step`), its handler
//! answers timeouts, and `<Owner>Owner(h, store)` binds it to the runtime's driver
//! (`runtime-go/owner`).

use super::names;
use super::text::{comment, quoted};
use crate::ir::{Event, Saga, Subscriber};

/// Every service that handles events.
pub(super) fn handlers(saga: &Saga) -> Vec<&str> {
    saga.services.iter().map(|s| s.name.as_str()).filter(|s| saga.subscriptions(s).next().is_some()).collect()
}

/// The status owner, when it handles events.
fn owner(saga: &Saga) -> Option<&str> {
    let owner = saga.status.as_ref()?.owner.as_str();
    handlers(saga).contains(&owner).then_some(owner)
}

fn replies_doc(replies: &[String]) -> String {
    if replies.is_empty() {
        "The spec allows no reply.".into()
    } else {
        let list: Vec<String> = replies.iter().map(|r| format!("`{r}`")).collect();
        format!("The spec allows these replies: {}.", list.join(", "))
    }
}

/// A sealed reply type: `name` is implemented exactly by `replies`.
fn sealed(name: &str, doc: &str, replies: impl IntoIterator<Item = String>) -> String {
    let marker = names::unexported(name);
    let mut out = format!("\n{}type {name} interface {{\n\tEvent\n\t{marker}()\n}}\n", comment("", doc));
    for r in replies {
        out.push_str(&format!("\nfunc ({r}) {marker}() {{}}\n"));
    }
    out
}

/// One subscription of `service`: its reply type, the handler method's documentation and
/// signature (with the owner's `step`), and the reply function of its case.
struct Handled<'a> {
    event: &'a Event,
    sub: &'a Subscriber,
    payload: String,
    reply: String,
}

fn handled<'a>(saga: &'a Saga, service: &'a str) -> Vec<Handled<'a>> {
    let svc = names::exported(service);
    saga.subscriptions(service)
        .map(|(event, sub)| {
            let payload = names::exported(&event.name);
            Handled { event, sub, reply: format!("{svc}On{payload}"), payload }
        })
        .collect()
}

/// The reply types and the handler interface of `service`; `step` is the owner's
/// extra parameter, `extra` its further methods.
fn interface(saga: &Saga, service: &str, step: Option<&str>, extra: &str) -> String {
    let svc = names::exported(service);
    let mut out = String::new();
    let mut methods = String::new();
    for h in handled(saga, service) {
        let (event, sub, payload, reply) = (h.event, h.sub, &h.payload, &h.reply);
        out.push_str(&sealed(
            reply,
            &format!(
                "{reply} is what `{service}` may publish after `{}`: one of the replies the spec\nlists, or nil for none. {}",
                event.name,
                replies_doc(&sub.replies)
            ),
            sub.replies.iter().map(|r| names::exported(r)),
        ));
        let compensates = saga
            .compensations
            .iter()
            .find(|c| c.on == event.name && c.service == service)
            .map(|c| format!("\n\nCompensation: undo `{}`.", c.undoes))
            .unwrap_or_default();
        let step_doc = if step.is_some() { " `step` says what the status machine made of it." } else { "" };
        methods.push_str(&comment(
            "\t",
            &format!(
                "On{payload}: `{service}` received `{}` (topic `{}`).{step_doc} {}{compensates}",
                event.name,
                event.topic,
                replies_doc(&sub.replies)
            ),
        ));
        let step_param = step.map(|s| format!(", step {s}")).unwrap_or_default();
        methods.push_str(&format!(
            "\tOn{payload}(ctx context.Context, tx pgx.Tx, event *Envelope[{payload}]{step_param}) ({reply}, error)\n"
        ));
    }
    let handler = format!("{svc}Handler");
    out.push('\n');
    out.push_str(&comment(
        "",
        &format!(
            "{handler} is everything `{service}` reacts to. Each method runs in the transaction\n\
             that also records the event in the inbox and its reply in the outbox; its reply type\n\
             admits exactly the events the spec lets `{service}` publish in reply."
        ),
    ));
    out.push_str(&format!("type {handler} interface {{\n{methods}{extra}}}\n"));
    out
}

/// `<Svc>Binding(param)`: the service's consumer group, and how it handles a decoded
/// message, `cases` being the switch's cases over the handled envelopes (`e`).
fn binding(saga: &Saga, service: &str, param: &str, cases: &str) -> String {
    let svc = names::exported(service);
    let group = handlers(saga).iter().position(|s| *s == service).unwrap_or_default();
    format!(
        "\n// {svc}Binding hands {name} to the runtime: the consumer group of `{service}`, the schemas it\n\
         // writes, and how each message it reads is handled.\n\
         func {svc}Binding({param}) participant.Binding {{\n\
         \treturn saga.Bind({quoted}, ConsumerGroups[{group}], func(m participant.Message) *participant.Inbound {{\n\
         \t\tswitch e := m.(type) {{\n{cases}\t\t}}\n\
         \t\t// An event of a topic `{service}` reads that it does not handle.\n\
         \t\treturn nil\n\t}})\n}}\n",
        quoted = quoted(service),
        name = param.split(' ').next().unwrap_or(param),
    )
}

fn participant(saga: &Saga, service: &str) -> String {
    let svc = names::exported(service);
    let cases: String = handled(saga, service)
        .iter()
        .map(|h| {
            format!(
                "\t\tcase *Envelope[{payload}]:\n\t\t\treturn participant.Handle(e, h.On{payload}, replyTo[{reply}](e))\n",
                payload = h.payload,
                reply = h.reply
            )
        })
        .collect();
    interface(saga, service, None, "") + &binding(saga, service, &format!("h {svc}Handler"), &cases)
}

fn status_owner(saga: &Saga, service: &str) -> String {
    let Some(machine) = &saga.status else { return String::new() };
    let svc = names::exported(service);
    let status = names::status_type(service);
    let key = names::unexported(&names::exported(&saga.key));

    // What a timeout may publish: every event a status's timeout emits.
    let mut emits: Vec<String> = Vec::new();
    for s in &machine.states {
        if let Some(e) = s.timeout.as_ref().and_then(|t| t.emits.clone())
            && !emits.contains(&e)
        {
            emits.push(e);
        }
    }
    let timeout_reply = format!("{svc}TimeoutReply");
    let mut out = sealed(
        &timeout_reply,
        &format!("{timeout_reply} is what `{service}` may publish when a saga times out, or nil for nothing."),
        emits.iter().map(|e| names::exported(e)),
    );
    let on_timeout = format!(
        "{}\tOnTimeout(ctx context.Context, tx pgx.Tx, {key} uuid.UUID, from, to {status}) ({timeout_reply}, error)\n",
        comment(
            "\t",
            "OnTimeout: a saga stayed in `from` past its timeout and moves to `to`: the event the spec\n\
             says the timeout emits (its compensations follow from it).",
        )
    );
    out.push_str(&interface(saga, service, Some(&format!("owner.Step[{status}]")), &on_timeout));

    let handled = handled(saga, service);
    let handle_cases: String = handled
        .iter()
        .map(|h| {
            format!(
                "\t\t\tcase *Envelope[{payload}]:\n\t\t\t\treturn participant.Answer(replyTo[{reply}](e))(h.On{payload}(ctx, tx, e, step))\n",
                payload = h.payload,
                reply = h.reply
            )
        })
        .collect();
    let types: Vec<String> = handled.iter().map(|h| format!("*Envelope[{}]", h.payload)).collect();
    out.push_str(&format!(
        "\n// {svc}Owner binds h and store to the runtime's status owner driver: each event runs\n\
         // through {machine} and then h, in the transaction of its inbox row; timeouts ask h for\n\
         // the event they publish.\n\
         func {svc}Owner(h {svc}Handler, store owner.Store[{status}]) *owner.Owner[{status}] {{\n\
         \treturn &owner.Owner[{status}]{{\n\
         \t\tMachine: {machine},\n\
         \t\tStore:   store,\n\
         \t\tUnparked: func(p owner.Parked) participant.Message {{\n\
         \t\t\tm, err := DecodeMessage(p.Payload)\n\
         \t\t\tif err != nil {{\n\
         \t\t\t\treturn nil\n\
         \t\t\t}}\n\
         \t\t\tswitch m.(type) {{\n\
         \t\t\tcase {types}:\n\
         \t\t\t\treturn m\n\
         \t\t\t}}\n\
         \t\t\treturn nil\n\
         \t\t}},\n\
         \t\tHandle: func(ctx context.Context, tx pgx.Tx, m participant.Message, step owner.Step[{status}]) (*participant.Outbound, error) {{\n\
         \t\t\tswitch e := m.(type) {{\n{handle_cases}\t\t\t}}\n\
         \t\t\treturn nil, fmt.Errorf(\"`{service}` does not handle `%s`\", m.EventType())\n\
         \t\t}},\n\
         \t\tOnTimeout: func(ctx context.Context, tx pgx.Tx, saga owner.Overdue[{status}], to {status}) (*participant.Outbound, error) {{\n\
         \t\t\treturn participant.Answer(func(r {timeout_reply}) (*participant.Outbound, error) {{\n\
         \t\t\t\te := New(saga.SagaKey, r)\n\
         \t\t\t\te.Traceparent, e.Tracestate = saga.Traceparent, saga.Tracestate\n\
         \t\t\t\treturn participant.NewOutbound(e)\n\
         \t\t\t}})(h.OnTimeout(ctx, tx, saga.SagaKey, saga.Status, to))\n\
         \t\t}},\n\
         \t}}\n}}\n",
        machine = names::machine(service),
        types = types.join(", "),
    ));
    // Every event runs through the driver alike: one case.
    let cases = format!(
        "\t\tcase {}:\n\
         \t\t\treturn participant.NewInbound(e, func(ctx context.Context, tx pgx.Tx) (*participant.Outbound, error) {{\n\
         \t\t\t\treturn o.RunEvent(ctx, tx, e)\n\
         \t\t\t}})\n",
        types.join(", ")
    );
    out.push_str(&binding(saga, service, &format!("o *owner.Owner[{status}]"), &cases));
    out
}

pub(super) fn declarations(saga: &Saga) -> String {
    let mut out = String::new();
    for service in handlers(saga) {
        if Some(service) == owner(saga) {
            out.push_str(&status_owner(saga, service));
        } else {
            out.push_str(&participant(saga, service));
        }
    }
    if !handlers(saga).is_empty() {
        out.push_str(
            "\n// saga is what every service's binding shares.\n\
             var saga = participant.Saga{\n\
             \tSchemas:          schemas,\n\
             \tEvents:           Events,\n\
             \tLearn:            registry.Learn,\n\
             \tDecode:           DecodeMessage,\n\
             \tDeadLetterSuffix: DeadLetterSuffix,\n\
             \tSchemaTopic:      SchemaTopic,\n}\n\
             \n// replyTo is how a handler's reply R to parent goes to the outbox: keyed, traced and\n\
             // with the context of parent ([Reply]). R is a reply type, which only the events the\n\
             // spec allows implement.\n\
             func replyTo[R Event, P Event](parent *Envelope[P]) func(R) (*participant.Outbound, error) {\n\
             \treturn func(r R) (*participant.Outbound, error) { return participant.NewOutbound(Reply(parent, r)) }\n}\n",
        );
    }
    out
}

/// Whether `handlers.go` binds a status owner (it then imports the owner's packages).
pub(super) fn binds_owner(saga: &Saga) -> bool {
    owner(saga).is_some()
}
