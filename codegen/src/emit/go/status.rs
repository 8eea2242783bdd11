//! Emits `status.go` for a saga with a status machine: the owner's status type and its
//! constants, and the machine's tables (`runtime-go/status.Machine`), from which the
//! runtime answers what the Rust crate's `<Owner>Status` answers.

use super::names;
use super::text::{Line, aligned, quoted};
use crate::ir::StatusMachine;

/// A duration as Go writes it, in the largest unit that keeps it whole.
fn duration(ms: u64) -> String {
    match ms {
        0 => "0".into(),
        ms if ms % 60_000 == 0 => format!("{} * time.Minute", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{} * time.Second", ms / 1_000),
        ms => format!("{ms} * time.Millisecond"),
    }
}

pub(super) fn declarations(machine: &StatusMachine) -> String {
    let owner = &machine.owner;
    let ty = names::status_type(owner);
    let status = |s: &str| names::status(owner, s);
    let list = |items: Vec<String>| items.join(", ");
    let mut out =
        format!("\n// {ty} is the status of a saga instance, owned by the `{owner}` service.\ntype {ty} string\n");

    out.push_str("\n// Every status of the spec, as stored in the database.\nconst (\n");
    let rows: Vec<Line> = machine
        .states
        .iter()
        .map(|s| Line::Row(vec![status(&s.name), ty.clone(), format!("= {}", quoted(&s.name))]))
        .collect();
    out.push_str(&aligned(&rows));
    out.push_str(")\n");

    let transitions: String = machine
        .transitions
        .iter()
        .map(|t| {
            format!("\t\t{{From: {}, Event: {}, To: {}}},\n", status(&t.from), names::event_type(&t.on), status(&t.to))
        })
        .collect();
    let timeouts: String = machine
        .states
        .iter()
        .filter_map(|s| s.timeout.as_ref().map(|t| (s, t)))
        .map(|(s, t)| {
            let emits = t.emits.as_deref().map(names::event_type).map(|e| format!(", Emits: {e}")).unwrap_or_default();
            format!("\t\t{{In: {}, After: {}, To: {}{emits}}},\n", status(&s.name), duration(t.after_ms), status(&t.to))
        })
        .collect();
    let migrations: String = machine
        .migrations
        .iter()
        .map(|m| format!("\t\t{{From: {}, To: {}}},\n", quoted(&m.from), status(&m.to)))
        .collect();
    let block = |field: &str, ty: &str, rows: String| {
        if rows.is_empty() { String::new() } else { format!("\t{field}: []{ty}{{\n{rows}\t}},\n") }
    };
    out.push_str(&format!(
        "\n// {machine} is the spec's status machine: its transitions, the timeout of every status that is\n\
         // not terminal, and the events that may wait, parked, for the status that accepts them.\n\
         var {machine} = &status.Machine[{ty}]{{\n\
         \tOwner:    {owner_q},\n\
         \tInitial:  {initial},\n\
         \tStatuses: []{ty}{{{statuses}}},\n\
         \tTerminal: []{ty}{{{terminal}}},\n\
         {transitions}{timeouts}{parks}{migrations}}}\n",
        machine = names::machine(owner),
        owner_q = quoted(owner),
        initial = status(&machine.initial),
        statuses = list(machine.states.iter().map(|s| status(&s.name)).collect()),
        terminal = list(machine.states.iter().filter(|s| s.terminal).map(|s| status(&s.name)).collect()),
        transitions = block("Transitions", &format!("status.Transition[{ty}]"), transitions),
        timeouts = block("Timeouts", &format!("status.Timeout[{ty}]"), timeouts),
        parks = if machine.parks.is_empty() {
            String::new()
        } else {
            format!("\tParks: []string{{{}}},\n", list(machine.parks.iter().map(|e| names::event_type(e)).collect()))
        },
        migrations = block("Migrations", &format!("status.Migration[{ty}]"), migrations),
    ));
    out
}
