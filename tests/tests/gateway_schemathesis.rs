//! Property-based fuzzing of the REST gateway from its own OpenAPI document
//! with schemathesis (PyPI): no response may be a 5xx, and every response
//! must match the documented status codes, content types and schemas.
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
    let gateway = PrivateGateway::start(&stack, &[("SSE_MAX_SECS", "5"), ("LOGIN_LIMIT_PER_IP", "100000")]).await;
    let admin = gateway.api.admin_token().await;
    let schema = gateway.api.url("/openapi.json");
    // schemathesis writes its example database and reports into its working folder.
    let workdir = stack.state_dir.join("schemathesis");
    std::fs::create_dir_all(&workdir).expect("schemathesis folder");
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
            // the other tests' feet; tests/tests/console.rs covers it on a private saga.
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
    // The summary, for `--nocapture` readers and CI logs of failures elsewhere.
    let lines: Vec<&str> = stdout.lines().collect();
    println!("{}", lines[lines.len().saturating_sub(25)..].join("\n"));
    drop(gateway);
}
