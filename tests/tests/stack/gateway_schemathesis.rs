//! Property-based fuzzing of the REST gateway from its own OpenAPI document
//! with schemathesis (PyPI), every phase including the stateful one (which
//! follows the document's links from what an operation creates to what takes
//! its id): no response may be a 5xx, every response must match the
//! documented status codes, content types and schemas, and no operation may
//! reject most of what its schema allows.
//!
//! schemathesis is installed, pinned, into a virtualenv under the shared
//! `.state/` folder the first time (Python 3 with `venv` and pip needed);
//! later runs reuse it. It fuzzes a private gateway process (own Redis key
//! prefix) so its sessions and rate-limit counters stay out of other tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use saga_tests::http::PrivateGateway;
use saga_tests::stack;

const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// Examples per operation and phase: enough to find shape errors, short enough for CI.
const MAX_EXAMPLES: &str = "20";

/// The schemathesis CLI, installing it first when needed.
fn schemathesis(root: &Path) -> PathBuf {
    saga_tests::python::venv_bin(root, SCHEMATHESIS, "SAGA_SCHEMATHESIS_VENV").join("schemathesis")
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let stack = stack();
    let root = stack.root.clone();
    let cli = tokio::task::spawn_blocking(move || schemathesis(&root)).await.expect("install");
    // Streams of orders the fuzzer creates close within seconds even if a saga lingers.
    // The fuzzer logs in with the same few emails again and again: the login
    // limits would answer 429 to most of it (gateway_auth tests them).
    let limits = [("LOGIN_LIMIT_PER_IP", "100000"), ("LOGIN_LIMIT_PER_ACCOUNT_IP", "100000")];
    let gateway = PrivateGateway::start(
        &stack,
        &[("SSE_MAX_SECS", "5"), limits[0], limits[1], ("LOGIN_LIMIT_PER_ACCOUNT", "100000")],
    )
    .await;
    let admin = gateway.api.admin_token().await;
    let schema = gateway.api.url("/openapi.json");
    // schemathesis writes its example database and reports into its working folder.
    let workdir = stack.state_dir.join("schemathesis");
    std::fs::create_dir_all(&workdir).expect("schemathesis folder");
    // A real user to credit: with random ids every valid credit is a 404, and
    // the few answers left are the 400s of deliberately invalid inputs, which
    // schemathesis then takes for a schema that says less than the code checks.
    let (_, customer_id) = gateway.api.customer().await;
    let config = format!(
        "[[operations]]\ninclude-path = \"/api/v1/admin/users/{{id}}/credit\"\nparameters = {{ id = \"{customer_id}\" }}\n"
    );
    std::fs::write(workdir.join("schemathesis.toml"), config).expect("schemathesis.toml");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(cli)
            .current_dir(workdir)
            .args(["run", &schema])
            .args(["--header", &format!("Authorization: Bearer {admin}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", MAX_EXAMPLES])
            // Logging out would revoke the token every other operation uses.
            .args(["--exclude-path", "/api/v1/auth/logout"])
            // Redriving would put the shared stack's dead letters back on its topics under
            // the other tests' feet; tests/tests/stack/console.rs covers it on a private saga.
            .args(["--exclude-path", "/api/v1/admin/console/dlq/redrive"])
            .args(["--generation-deterministic", "--request-timeout", "30", "--no-color"])
            .output()
            .expect("run schemathesis")
    })
    .await
    .expect("schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis failed ({}):\n{stdout}\n{stderr}", output.status);
    // The report, for `--nocapture` readers and CI logs of failures elsewhere.
    println!("{stdout}");
    // Operations that reject most of what their schema allows: the document
    // does not say what the code checks.
    assert!(!stdout.contains("Schema validation mismatch"), "the schema and the validation disagree:\n{stdout}");
    // The links between operations are followed (register -> credit, product
    // -> its reads and writes, order -> its reads).
    assert!(stdout.contains("✅ Stateful"), "the stateful phase ran:\n{stdout}");
    drop(gateway);
}
