//! The spec is enforced by the compiler: a handler cannot publish an event the spec does not
//! allow it to publish in reply.

#[test]
fn handlers_cannot_publish_undeclared_events() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
