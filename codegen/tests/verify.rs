//! The verifier: the shipped specs are proved sound, and each seeded bug (the real spec,
//! edited) yields its shortest counterexample, pinned by an insta snapshot as it is
//! rendered: the located diagnostic, then the Mermaid sequence diagram.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).expect("spec readable")
}

/// The real spec with edits applied; each edit must apply exactly once.
fn edited(edits: &[(&str, &str)]) -> String {
    let mut text = read("spec/saga.yaml");
    for (from, to) in edits {
        assert_eq!(text.matches(from).count(), 1, "edit target `{from}` must occur once");
        text = text.replacen(from, to, 1);
    }
    text
}

fn prove(file: &str, text: &str) -> Result<saga_codegen::verify::Proof, saga_codegen::SpecErrors> {
    let saga = saga_codegen::check(file, text).unwrap_or_else(|e| panic!("{}", e.render()));
    saga_codegen::prove(file, text, &saga)
}

/// The counterexample for a spec that must not verify.
fn counterexample(text: &str) -> String {
    match prove("spec/saga.yaml", text) {
        Ok(proof) => panic!("the seeded bug went unnoticed: {proof}"),
        Err(errors) => format!("{errors}\n{}", errors.render()),
    }
}

#[test]
fn the_shipped_specs_are_sound() {
    for file in [
        "spec/saga.yaml",
        "spec/examples/ticketing.yaml",
        "spec/examples/evolution/v1.yaml",
        "spec/examples/evolution/v2.yaml",
    ] {
        match prove(file, &read(file)) {
            Ok(proof) => {
                assert_eq!(proof.scenarios.len(), 2, "{file}: one saga and two competing ones");
                assert!(proof.scenarios.iter().all(|s| s.states > 1), "{file}: {proof}");
                println!("{file}: {proof}");
            }
            Err(e) => panic!("{}", e.render()),
        }
    }
}

#[test]
fn a_removed_compensation_leaves_the_debit_held() {
    insta::assert_snapshot!(counterexample(&edited(&[(
        "  - { on: order.cancelled, service: user, undoes: payment.completed, tombstone: true }\n",
        ""
    )])));
}

#[test]
fn a_removed_timeout_lets_a_saga_wait_forever() {
    insta::assert_snapshot!(counterexample(&edited(&[(
        "    inventory_reserved: { after: 60s, to: cancelled, emits: order.cancelled }\n",
        ""
    )])));
}

#[test]
fn a_reply_after_a_cancellation_without_a_tombstone_is_never_refunded() {
    insta::assert_snapshot!(counterexample(&edited(&[(
        "undoes: payment.completed, tombstone: true }",
        "undoes: payment.completed }"
    )])));
}

#[test]
fn an_early_reply_that_is_not_parked_has_no_answer() {
    insta::assert_snapshot!(counterexample(&edited(&[(
        "parks: [payment.completed, payment.fail]",
        "parks: [payment.fail]"
    )])));
}
