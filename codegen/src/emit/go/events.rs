//! Emits `events.go`: one payload struct per event, the `Event` interface they implement,
//! and the `Envelope` every event travels in, with its encoding and decoding.

use super::names;
use super::text::{Line, aligned, aligned_at, comment, comment_lines, quoted};
use super::types::struct_decl;
use crate::ir::{CONTEXT_TYPE, Saga};

pub(super) fn declarations(saga: &Saga) -> String {
    let key = names::exported(&saga.key);
    let mut out = String::new();

    out.push_str("\n// The spec's name of every event.\nconst (\n");
    let rows: Vec<Line> = saga
        .events
        .iter()
        .map(|e| Line::Row(vec![names::event_type(&e.name), format!("= {}", quoted(&e.name))]))
        .collect();
    out.push_str(&aligned(&rows));
    out.push_str(")\n");

    out.push_str(
        "\n// Event is the payload of one of the saga's events.\ntype Event interface {\n\
         \t// EventType is the spec's name of the event, e.g. `order.created`.\n\tEventType() string\n\
         \t// Topic is the topic the event travels on.\n\tTopic() string\n\
         \t// Publisher is the service that publishes the event.\n\tPublisher() string\n}\n",
    );

    for e in &saga.events {
        let name = names::exported(&e.name);
        let doc = e.doc.as_deref().unwrap_or("");
        out.push('\n');
        out.push_str(&comment("", format!("{name} is the payload of `{}`. {doc}", e.name).trim_end()));
        out.push_str(&struct_decl(&name, &e.fields));
        let event_type = names::event_type(&e.name);
        let topic = names::topic(&e.topic);
        out.push_str(&format!(
            "\n// EventType is [{event_type}].\nfunc ({name}) EventType() string {{ return {event_type} }}\n\
             \n// Topic is [{topic}].\nfunc ({name}) Topic() string {{ return {topic} }}\n\
             \n// Publisher is service `{}`.\nfunc ({name}) Publisher() string {{ return {} }}\n",
            e.publisher,
            quoted(&e.publisher),
        ));
    }

    // The envelope's fields, as the event schemas (emit::avro::event_schema) declare them.
    let mut fields = Vec::new();
    fields.extend(comment_lines("EventID is unique per event; the inbox deduplicates on it."));
    fields.push(Line::Row(vec!["EventID".into(), "uuid.UUID".into(), "`avro:\"event_id\"`".into()]));
    fields.extend(comment_lines(&format!(
        "{key} is the saga key: it names the saga instance and is the Kafka partition key."
    )));
    fields.push(Line::Row(vec![key.clone(), "uuid.UUID".into(), format!("`avro:\"{}\"`", saga.key)]));
    fields.extend(comment_lines("OccurredAt is when the event happened (UTC), to the microsecond."));
    fields.push(Line::Row(vec!["OccurredAt".into(), "time.Time".into(), "`avro:\"occurred_at\"`".into()]));
    fields.extend(comment_lines("Traceparent and Tracestate are the W3C trace context of the saga."));
    fields.push(Line::Row(vec!["Traceparent".into(), "*string".into(), "`avro:\"traceparent\"`".into()]));
    fields.push(Line::Row(vec!["Tracestate".into(), "*string".into(), "`avro:\"tracestate\"`".into()]));
    fields.extend(comment_lines(
        "Deadline is when the status owner gives up on the saga unless it has the answer to\n\
         this event; nil when no answer is awaited by a deadline.",
    ));
    fields.push(Line::Row(vec!["Deadline".into(), "*time.Time".into(), "`avro:\"deadline\"`".into()]));
    if saga.context.is_some() {
        fields.extend(comment_lines(
            "Context is the saga context (`context:` in the spec): what the command that started\n\
             the saga said, copied by every reply; nil on an event a timeout emits.",
        ));
        fields.push(Line::Row(vec!["Context".into(), format!("*{CONTEXT_TYPE}"), "`avro:\"context\"`".into()]));
    }
    fields.extend(comment_lines("Payload is what the event says."));
    fields.push(Line::Row(vec!["Payload".into(), "E".into(), "`avro:\"payload\"`".into()]));
    out.push_str(&format!(
        "\n// Envelope is an event as it travels: what every event carries, and its payload.\n\
         type Envelope[E Event] struct {{\n{}}}\n",
        aligned(&fields)
    ));

    let mut reply_fields = vec![
        ("EventID", "participant.NewEventID()".to_string()),
        (key.as_str(), format!("parent.{key}")),
        ("OccurredAt", "participant.Now()".into()),
        ("Traceparent", "parent.Traceparent".into()),
        ("Tracestate", "parent.Tracestate".into()),
    ];
    if saga.context.is_some() {
        reply_fields.push(("Context", "parent.Context".into()));
    }
    reply_fields.push(("Payload", "payload".into()));
    let reply_fields: Vec<Line> =
        reply_fields.into_iter().map(|(k, v)| Line::Row(vec![format!("{k}:"), format!("{v},")])).collect();
    out.push_str(&format!(
        r#"
// New is a new event of the saga keyed {key}: a new id, now, no trace context or deadline.
func New[E Event]({lower} uuid.UUID, payload E) *Envelope[E] {{
	return &Envelope[E]{{EventID: participant.NewEventID(), {key}: {lower}, OccurredAt: participant.Now(), Payload: payload}}
}}

// Reply is the event published in reply to parent: the same saga key, trace and context,
// a new id and time, and no deadline (the status owner sets the next one when the reply
// reaches it).
func Reply[E Event, P Event](parent *Envelope[P], payload E) *Envelope[E] {{
	return &Envelope[E]{{
{reply_fields}	}}
}}

// EventType is the spec's name of the event.
func (e *Envelope[E]) EventType() string {{ return e.Payload.EventType() }}

// Topic is the topic the event travels on.
func (e *Envelope[E]) Topic() string {{ return e.Payload.Topic() }}

// Key is the saga key, which is also the Kafka partition key.
func (e *Envelope[E]) Key() uuid.UUID {{ return e.{key} }}

// ID is the event's id, unique per event.
func (e *Envelope[E]) ID() uuid.UUID {{ return e.EventID }}

// Trace is the event's W3C trace context.
func (e *Envelope[E]) Trace() (traceparent, tracestate *string) {{ return e.Traceparent, e.Tracestate }}

// Due is the event's deadline.
func (e *Envelope[E]) Due() *time.Time {{ return e.Deadline }}

// Encode is the event single-object encoded with the schema version this build writes.
func (e *Envelope[E]) Encode() ([]byte, error) {{ return registry.Encode(e.EventType(), e) }}

// Decode reads an event of type E written with any published version of its schema.
func Decode[E Event](data []byte) (*Envelope[E], error) {{
	return wire.DecodeAs[Envelope[E]](registry, data, (*new(E)).EventType())
}}

// Message is any event of the saga, decoded: an *Envelope of one of the payloads.
type Message = participant.Message

// DecodeMessage decodes data as the event its writer schema says it is.
func DecodeMessage(data []byte) (Message, error) {{
	event, _, err := registry.Writer(data)
	if err != nil {{
		return nil, err
	}}
	switch event {{
{cases}	}}
	return nil, fmt.Errorf("event %q has a schema but no payload type", event)
}}
"#,
        lower = names::unexported(&key),
        reply_fields = aligned_at(&reply_fields, 2),
        cases = saga
            .events
            .iter()
            .map(|e| format!(
                "\tcase {}:\n\t\treturn participant.AsMessage(Decode[{}](data))\n",
                names::event_type(&e.name),
                names::exported(&e.name)
            ))
            .collect::<String>(),
    ));
    out
}
