//! The compatibility gate: the real spec, edited, against the committed schema history and
//! contract (`.avro/`), as `cargo xtask gen --check` runs it. Each breaking change is a
//! located diagnostic pinned by an insta snapshot; compatible changes pass and append a
//! schema version. `spec_diff_*` pin what `cargo xtask spec diff` prints.

use std::path::PathBuf;

use saga_codegen::evolution::Verdict;
use saga_codegen::rollout::Needs;
use saga_codegen::{CompileError, Layout};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn spec() -> String {
    std::fs::read_to_string(root().join("spec/saga.yaml")).expect("spec readable")
}

/// The spec with edits applied; each edit must apply exactly once.
fn edited(edits: &[(&str, &str)]) -> String {
    let mut text = spec();
    for (from, to) in edits {
        assert_eq!(text.matches(from).count(), 1, "edit target `{from}` must occur once");
        text = text.replacen(from, to, 1);
    }
    text
}

fn compile(text: &str) -> Result<saga_codegen::FileSet, CompileError> {
    saga_codegen::compile(&root(), "spec/saga.yaml", text, &Layout::standard())
}

/// The gate's diagnostics for a spec it must refuse.
fn refused(text: &str) -> String {
    match compile(text) {
        Ok(_) => panic!("the gate let a breaking change through"),
        Err(CompileError::Spec(errors)) => format!("{errors}\n{}", errors.render()),
        Err(other) => panic!("not a spec error: {other}"),
    }
}

fn diff(text: &str) -> String {
    let (changes, _) =
        saga_codegen::diff(("HEAD:spec/saga.yaml", &spec()), ("spec/saga.yaml", text)).expect("both specs valid");
    changes.iter().map(|c| format!("{c}\n")).collect()
}

#[test]
fn the_committed_spec_passes_the_gate() {
    compile(&spec()).expect("no change, nothing to refuse");
}

#[test]
fn a_partition_count_change_is_refused() {
    insta::assert_snapshot!(refused(&edited(&[("order-events: { partitions: 6,", "order-events: { partitions: 12,")])));
}

#[test]
fn removing_a_field_without_a_default_and_adding_one_are_refused() {
    insta::assert_snapshot!(refused(&edited(&[
        ("      reason: PaymentFailure\n      detail: string\n", "      reason: PaymentFailure\n"),
        (
            "      user_id: uuid\n      amount: money\n\n  payment.fail:",
            "      user_id: uuid\n      amount: money\n      note: string\n\n  payment.fail:"
        ),
    ])));
}

#[test]
fn a_changed_type_and_a_removed_enum_symbol_are_refused() {
    insta::assert_snapshot!(refused(&edited(&[
        ("      product_id: uuid\n      quantity: int\n", "      product_id: uuid\n      quantity: long\n"),
        ("enum: [insufficient_stock, unknown_product, deadline_passed]", "enum: [insufficient_stock, deadline_passed]"),
    ])));
}

#[test]
fn renaming_an_event_in_flight_is_refused() {
    insta::assert_snapshot!(refused(&edited(&[
        ("  order.completed:\n", "  order.fulfilled:\n"),
        ("      order: [order.completed]\n", "      order: [order.fulfilled]\n"),
    ])));
}

#[test]
fn renaming_a_state_needs_a_migration() {
    let renamed = [
        (
            "states: [created, inventory_reserved, paid, completed, inventory_reserved_failed, payment_failed, shipping_failed, cancelled]",
            "states: [created, inventory_reserved, paid, completed, inventory_reserved_failed, payment_declined, shipping_failed, cancelled]",
        ),
        (
            "terminal: [completed, inventory_reserved_failed, payment_failed, shipping_failed, cancelled]",
            "terminal: [completed, inventory_reserved_failed, payment_declined, shipping_failed, cancelled]",
        ),
        (
            "{ from: inventory_reserved, on: payment.fail, to: payment_failed }",
            "{ from: inventory_reserved, on: payment.fail, to: payment_declined }",
        ),
    ];
    insta::assert_snapshot!(refused(&edited(&renamed)));
    let mut migrated = renamed.to_vec();
    migrated.push(("  timeouts:\n", "  migrations:\n    payment_failed: payment_declined\n  timeouts:\n"));
    compile(&edited(&migrated)).expect("a migration makes the rename compatible");
}

#[test]
fn renaming_the_saga_renames_its_consumer_groups() {
    insta::assert_snapshot!(refused(&edited(&[("saga: order_fulfillment\n", "saga: order_flow\n")])));
}

#[test]
fn an_optional_field_passes_and_appends_a_schema_version() {
    let text = edited(&[(
        "      items: \"[OrderItem]\"\n      created_at: timestamp\n",
        "      items: \"[OrderItem]\"\n      created_at: timestamp\n      coupon: { type: string?, doc: A discount code. }\n",
    )]);
    let files = compile(&text).expect("compatible");
    let versions: Vec<String> =
        files.files.keys().filter(|p| p.starts_with(".avro/order.created")).map(|p| p.display().to_string()).collect();
    let history = std::fs::read_dir(root().join(".avro/order.created")).expect("history").count();
    assert_eq!(versions.len(), history + 1, "{versions:?}");
    assert!(versions.contains(&format!(".avro/order.created/v{}.avsc", history + 1)), "{versions:?}");
    insta::assert_snapshot!(diff(&text));
}

/// Retiring is the first step of removing an event: still consumed, no longer published.
/// (Removing it in the next version is compatible: `evolution::tests`.)
#[test]
fn a_retired_event_may_not_be_published() {
    let retired = edited(&[("    external: true\n", "    external: true\n    retired: true\n")]);
    match saga_codegen::check("spec/saga.yaml", &retired) {
        Ok(_) => panic!("order.completed is still published in reply to payment.completed"),
        Err(e) => insta::assert_snapshot!(format!("{e}\n{}", e.render())),
    }
}

#[test]
fn spec_diff_lists_breaking_changes_first_with_their_reasons() {
    insta::assert_snapshot!(diff(&edited(&[
        ("order-events: { partitions: 6,", "order-events: { partitions: 12,"),
        ("enum: [timed_out]", "enum: [timed_out, customer_request]"),
        ("      reason: PaymentFailure\n      detail: string\n", "      reason: PaymentFailure\n"),
    ])));
}

/// Expand, then contract: an event is retired in one version (nothing publishes it, its
/// consumers still handle what was written) and removed in the next.
#[test]
fn retiring_an_event_then_removing_it_is_compatible_in_two_steps() {
    let retired = edited(&[
        ("      user: [payment.refunded]\n      order: []\n", "      user: []\n      order: []\n"),
        ("      user: [payment.refunded]\n      shipping:", "      user: []\n      shipping:"),
        ("  payment.refunded:\n    doc:", "  payment.refunded:\n    retired: true\n    doc:"),
    ]);
    compile(&retired).expect("retiring passes the gate");
    let (retire, _) =
        saga_codegen::diff(("HEAD:spec/saga.yaml", &spec()), ("spec/saga.yaml", &retired)).expect("valid");
    assert!(retire.iter().all(|c| c.verdict == Verdict::Compatible), "{retire:#?}");
    assert!(retire.iter().any(|c| c.what == "event `payment.refunded` retired"), "{retire:#?}");

    let start = retired.find("  payment.refunded:\n").expect("the event");
    let end = start + retired[start..].find("\n\n").expect("its end") + 2;
    let removed = format!("{}{}", &retired[..start], &retired[end..]);
    let (remove, _) = saga_codegen::diff(("retired", &retired), ("removed", &removed)).expect("valid");
    assert!(remove.iter().all(|c| c.verdict == Verdict::Compatible), "{remove:#?}");
    assert!(remove.iter().any(|c| c.what == "retired event `payment.refunded` removed"), "{remove:#?}");
    // Removing it at once, without the retiring step, is refused.
    let (at_once, _) = saga_codegen::diff(("HEAD:spec/saga.yaml", &spec()), ("removed", &removed)).expect("valid");
    assert!(at_once.iter().any(|c| c.verdict == Verdict::Breaking && c.what.contains("`payment.refunded` removed")));
}

/// The evolution example's v2 against its v1: one compatible change of each kind.
#[test]
fn the_evolution_example_is_compatible_change_by_change() {
    let read =
        |v: &str| std::fs::read_to_string(root().join(format!("spec/examples/evolution/{v}.yaml"))).expect("spec");
    let (changes, plan) = saga_codegen::diff(("v1.yaml", &read("v1")), ("v2.yaml", &read("v2"))).expect("both valid");
    insta::assert_snapshot!(format!("{}{plan}\n", changes.iter().map(|c| format!("{c}\n")).collect::<String>()));
    assert!(changes.iter().all(|c| c.verdict == Verdict::Compatible));
}

/// Adding a participant (spec/scaling/three-participants.yaml is the saga before its
/// shipping step): the diff tells what the saga now does, that shipping goes before the
/// order service, which now waits for it, and after product and user, which carry the
/// saga context it reads.
#[test]
fn adding_a_shipping_step_tells_the_behaviour_change_and_the_deploy_order() {
    let three = std::fs::read_to_string(root().join("spec/scaling/three-participants.yaml")).expect("spec");
    let (changes, plan) =
        saga_codegen::diff(("three-participants.yaml", &three), ("spec/saga.yaml", &spec())).expect("both valid");
    assert!(changes.iter().all(|c| c.verdict == Verdict::Compatible), "{changes:#?}");
    let lines: Vec<String> = plan.changes.iter().map(|c| format!("{}: {}", c.service, c.what)).collect();
    for expected in [
        "order: `inventory_reserved` on `payment.completed` now leads to `paid` (was `completed`)",
        "order: no longer replies `order.completed` to `payment.completed`",
        "order: now handles `shipment.booked` and may reply `order.completed`",
        "order: new timeout: `paid` after 60000 ms to `cancelled`, emits `order.cancelled`",
        "user: new compensation: on `shipment.failed` it undoes `payment.completed`",
        "shipping: new compensation: on `order.cancelled` it undoes `shipment.booked`, leaving a tombstone if it comes first",
        "shipping: reads the saga context on `payment.completed` (sagas begun before `order`, `product`, `user` run the new version reach it without one, and replies `shipment.booked` to them)",
        "order: `order.created` is written with a new schema (its consumers look it up on the schema topic)",
    ] {
        assert!(lines.iter().any(|l| l == expected), "missing {expected:?} in {lines:#?}");
    }
    let needs = |service: &str, what: &str| {
        let change = plan.changes.iter().find(|c| c.service == service && c.what.starts_with(what)).expect(what);
        match &change.needs {
            Needs::After { first, .. } => first.iter().cloned().collect::<Vec<_>>(),
            Needs::AnyOrder => vec![],
        }
    };
    assert_eq!(needs("order", "`inventory_reserved` on `payment.completed`"), ["shipping"], "it waits for shipping");
    // Every event's schema gains the context: the consumers look the new schemas up on the
    // schema topic, and the context reader does without it until its carriers are new, so
    // only the owner's new waiting state orders the rollout.
    assert_eq!(needs("shipping", "reads the saga context"), Vec::<String>::new());
    assert_eq!(needs("order", "`order.created` is written with a new schema"), Vec::<String>::new());
    let order = plan.order.clone().expect("an order");
    let position = |service: &str| order.iter().position(|s| s == service).expect(service);
    assert!(position("shipping") < position("order"), "{order:?}");
    assert!(!plan.any_order());
    // Old and new side by side: the plan's order is sound, and every order that deploys
    // the order service before shipping times sagas out in `paid`.
    assert!(plan.proved(), "{plan}");
    let proofs = plan.proofs.as_ref().expect("modelled");
    assert_eq!(proofs.len(), 24, "every order of four services");
    for proof in proofs {
        let position = |service: &str| proof.order.iter().position(|s| s == service).expect(service);
        assert_eq!(proof.sound(), position("shipping") < position("order"), "{proof}");
    }
    insta::assert_snapshot!(plan.to_string());
}

/// The shipping step without `context.without`: shipping may refuse a saga the old order
/// service completed, in every order, so the plan's own order is not proved and `spec
/// diff` fails on it.
#[test]
fn a_plan_whose_own_order_is_not_sound_is_not_proved() {
    let three = std::fs::read_to_string(root().join("spec/scaling/three-participants.yaml")).expect("spec");
    let without = "  without:\n    shipping: { payment.completed: shipment.booked }\n";
    let four = spec();
    assert!(four.contains(without));
    let (_, plan) =
        saga_codegen::diff(("three-participants.yaml", &three), ("spec/saga.yaml", &four.replacen(without, "", 1)))
            .expect("both valid");
    assert!(!plan.proved(), "{plan}");
    let text = plan.to_string();
    assert!(text.contains("this order is NOT sound"), "{text}");
    assert!(text.contains("without holding `reservation`"), "{text}");
}
