//! Every class of spec error, on a small inline spec, with the exact rendered diagnostic
//! (file:line:column, the offending name, a hint) pinned by an insta snapshot.

const BASE: &str = r#"saga: mini
namespace: test.mini
key: order_id
services: [order, product]
topics:
  orders: { partitions: 1 }
types:
  Item: { fields: { sku: string } }
commands:
  Place: { service: order, emits: order.placed }
events:
  order.placed:
    topic: orders
    publisher: order
    subscribers:
      product: [stock.reserved, stock.failed]
    fields: { items: "[Item]" }
  stock.reserved:
    topic: orders
    publisher: product
    effect: { holds: stock }
    subscribers: { order: [order.completed] }
  stock.failed:
    topic: orders
    publisher: product
    outcome: failure
    subscribers:
      order: []
  order.completed:
    topic: orders
    publisher: order
    external: true
  order.cancelled:
    topic: orders
    publisher: order
    subscribers:
      product: []
status:
  owner: order
  initial: placed
  states: [placed, reserved, failed, cancelled]
  terminal: [reserved, failed, cancelled]
  transitions:
    - { from: placed, on: stock.reserved, to: reserved }
    - { from: placed, on: stock.failed, to: failed }
  timeouts:
    placed: { after: 10s, to: cancelled, emits: order.cancelled }
compensations:
  - { on: order.cancelled, service: product, undoes: stock.reserved }
"#;

/// The base spec with one edit; the edit must apply.
fn edit(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "edit target `{from}` must occur once");
    BASE.replacen(from, to, 1)
}

/// What the generator says of a spec it must refuse: the validator's errors, or, for a
/// spec that validates, the verifier's counterexample.
fn render(yaml: &str) -> String {
    let file = "spec/fixture.yaml";
    match saga_codegen::check(file, yaml).and_then(|saga| saga_codegen::prove(file, yaml, &saga)) {
        Ok(_) => panic!("spec unexpectedly valid"),
        Err(e) => format!("{}\n{}", e, e.render()),
    }
}

#[test]
fn base_is_valid() {
    let file = "spec/fixture.yaml";
    if let Err(e) = saga_codegen::check(file, BASE).and_then(|saga| saga_codegen::prove(file, BASE, &saga)) {
        panic!("{}", e.render());
    }
}

#[test]
fn malformed_yaml() {
    insta::assert_snapshot!(render(&edit("orders: { partitions: 1 }", "orders: { partitions: 1")));
}

#[test]
fn wrong_shape() {
    insta::assert_snapshot!(render(&edit("    outcome: failure\n", "    outcome: failure\n    retries: 3\n")));
}

#[test]
fn unknown_event() {
    insta::assert_snapshot!(render(&edit("[stock.reserved, stock.failed]", "[stock.reserved, stock.faild]")));
}

#[test]
fn unknown_service() {
    insta::assert_snapshot!(render(&edit("      product: []\n", "      warehouse: []\n")));
}

#[test]
fn unknown_state() {
    insta::assert_snapshot!(render(&edit("to: reserved }", "to: reserve }")));
}

#[test]
fn unknown_type() {
    insta::assert_snapshot!(render(&edit(r#"items: "[Item]""#, r#"items: "[Itme]""#)));
}

#[test]
fn bad_field_type() {
    insta::assert_snapshot!(render(&edit(r#"items: "[Item]""#, r#"items: "[Item""#)));
}

#[test]
fn duplicate_name() {
    insta::assert_snapshot!(render(&edit(
        "  orders: { partitions: 1 }\n",
        "  orders: { partitions: 1 }\n  orders: { partitions: 2 }\n"
    )));
}

#[test]
fn duplicate_state() {
    insta::assert_snapshot!(render(&edit(
        "states: [placed, reserved, failed, cancelled]",
        "states: [placed, reserved, failed, cancelled, failed]"
    )));
}

#[test]
fn event_published_by_a_service_that_is_not_its_publisher() {
    insta::assert_snapshot!(render(&edit(
        "[stock.reserved, stock.failed]",
        "[stock.reserved, stock.failed, order.completed]"
    )));
}

#[test]
fn event_without_subscriber() {
    insta::assert_snapshot!(render(&edit("    external: true\n", "")));
}

#[test]
fn unreachable_state() {
    insta::assert_snapshot!(render(&edit(
        "  states: [placed, reserved, failed, cancelled]\n  terminal: [reserved, failed, cancelled]",
        "  states: [placed, reserved, failed, cancelled, archived]\n  terminal: [reserved, failed, cancelled, archived]"
    )));
}

#[test]
fn terminal_state_with_outgoing_transition() {
    insta::assert_snapshot!(render(&edit(
        "    - { from: placed, on: stock.failed, to: failed }\n",
        "    - { from: placed, on: stock.failed, to: failed }\n    - { from: reserved, on: stock.failed, to: failed }\n"
    )));
}

#[test]
fn non_terminal_state_without_timeout() {
    insta::assert_snapshot!(render(&edit("terminal: [reserved, failed, cancelled]", "terminal: [failed, cancelled]")));
}

#[test]
fn effect_that_holds_and_releases() {
    insta::assert_snapshot!(render(&edit("effect: { holds: stock }", "effect: { holds: stock, releases: stock }")));
}

#[test]
fn effect_that_is_a_word_other_than_none() {
    insta::assert_snapshot!(render(&edit("effect: { holds: stock }", "effect: nothing")));
}

#[test]
fn compensation_undoing_an_event_that_holds_nothing() {
    insta::assert_snapshot!(render(&edit("    effect: { holds: stock }\n", "")));
}

#[test]
fn release_of_what_nothing_holds() {
    insta::assert_snapshot!(render(&edit(
        "  order.cancelled:\n    topic: orders\n    publisher: order\n",
        "  order.cancelled:\n    topic: orders\n    publisher: order\n    effect: { releases: stok }\n"
    )));
}

#[test]
fn parked_event_no_transition_waits_for() {
    insta::assert_snapshot!(render(&edit(
        "  timeouts:\n    placed:",
        "  parks: [order.cancelled]\n  timeouts:\n    placed:"
    )));
}

#[test]
fn compensation_undoing_a_failure() {
    insta::assert_snapshot!(render(&edit("undoes: stock.reserved", "undoes: stock.failed")));
}

#[test]
fn compensation_undoing_another_services_event() {
    insta::assert_snapshot!(render(&edit("undoes: stock.reserved", "undoes: order.placed")));
}

#[test]
fn command_on_a_service_that_does_not_own_the_status() {
    insta::assert_snapshot!(render(&edit(
        "  Place: { service: order, emits: order.placed }\n",
        "  Place: { service: order, emits: order.placed }\n  Restock: { service: product, emits: stock.reserved }\n"
    )));
}

#[test]
fn command_without_a_status_machine() {
    let start = BASE.find("status:\n").expect("status section");
    let end = BASE.find("compensations:\n").expect("compensations section");
    // Without the status machine, its timeout no longer publishes `order.cancelled` either.
    let yaml = format!("{}{}", &BASE[..start], &BASE[end..]);
    insta::assert_snapshot!(render(&yaml));
}

#[test]
fn service_that_subscribes_to_nothing() {
    insta::assert_snapshot!(render(&edit("services: [order, product]", "services: [order, product, audit]")));
}

#[test]
fn bad_duration() {
    insta::assert_snapshot!(render(&edit("after: 10s", "after: 10 seconds")));
}

#[test]
fn batch_out_of_range() {
    let yaml = format!("{BASE}delivery:\n  consumers:\n    product: {{ batch: 0 }}\n");
    insta::assert_snapshot!(render(&yaml));
}

#[test]
fn several_errors_are_reported_together() {
    let yaml = edit("to: reserved }", "to: reserve }").replace("undoes: stock.reserved", "undoes: stock.failed");
    let out = render(&yaml);
    // The typo also leaves `reserved` unreachable: cascades are reported, not hidden.
    assert!(out.starts_with("3 error(s)"), "{out}");
}

#[test]
fn unknown_topic() {
    insta::assert_snapshot!(render(
        &edit("    outcome: failure\n", "    outcome: failure\n    topic: order\n").replacen(
            "  stock.failed:\n    topic: orders\n",
            "  stock.failed:\n",
            1
        )
    ));
}

#[test]
fn reserved_name() {
    insta::assert_snapshot!(render(
        &edit("  Item: { fields: { sku: string } }", "  Value: { fields: { sku: string } }")
            .replace("[Item]", "[Value]")
    ));
}

/// Robustness: deleting any one line of the real spec, or doubling it, yields output or
/// diagnostics, never a panic.
#[test]
fn line_edits_of_the_real_spec_never_panic() {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/saga.yaml")).expect("reads");
    let lines: Vec<&str> = spec.lines().collect();
    let layout = saga_codegen::Layout::standard();
    for i in 0..lines.len() {
        for doubled in [false, true] {
            let mut edited: Vec<&str> = lines.clone();
            if doubled {
                edited.insert(i, lines[i]);
            } else {
                edited.remove(i);
            }
            let text = edited.join("\n");
            if let Err(saga_codegen::CompileError::Internal(e)) =
                saga_codegen::compile(std::path::Path::new("/nonexistent"), "spec/saga.yaml", &text, &layout)
            {
                panic!("line {} ({}): generator bug: {e}", i + 1, if doubled { "doubled" } else { "deleted" });
            }
        }
    }
}

#[test]
fn context_fields_come_from_the_command_and_go_to_a_subscriber() {
    insta::assert_snapshot!(render(&edit(
        "events:\n",
        "context:\n  fields: { items: \"[Item]\" }\n  read_by:\n    order: [order.placed]\nevents:\n",
    )));
}

#[test]
fn context_read_on_an_event_a_timeout_emits() {
    // `order.placed` carries it (the command set it), `order.cancelled` does not (a
    // timeout emits it, from no event).
    insta::assert_snapshot!(render(
        &edit(
            "events:\n",
            "context:\n  fields: { items: \"[Item]\" }\n  read_by:\n    product: [order.placed, order.cancelled]\nevents:\n",
        )
        .replace("  Place: { service: order, emits: order.placed }", "  Place: { service: order, emits: order.placed, fields: { items: \"[Item]\" } }")
    ));
}

#[test]
fn context_without_names_a_read_and_one_of_its_replies() {
    // `without` for an event the reader does not read the context on, and a reply it
    // cannot send: each its own diagnostic, in one run.
    insta::assert_snapshot!(render(
        &edit(
            "events:\n",
            "context:\n  fields: { items: \"[Item]\" }\n  read_by:\n    product: [order.placed]\n  without:\n    product: { order.placed: order.cancelled, order.cancelled: stock.failed }\nevents:\n",
        )
        .replace("  Place: { service: order, emits: order.placed }", "  Place: { service: order, emits: order.placed, fields: { items: \"[Item]\" } }")
    ));
}
