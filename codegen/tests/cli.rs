//! The `saga-codegen` binary: a user compiles and checks a spec of their own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_saga-codegen")).args(args).output().expect("runs")
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("saga-codegen-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creates scratch dir");
    dir
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/examples/ticketing.yaml")
}

#[test]
fn writes_then_checks_then_lists_stale_files() {
    let out = scratch("write");
    let (spec, dir) = (example(), out.display().to_string());
    let spec = spec.to_str().expect("utf-8 path");
    let run = bin(&["--spec", spec, "--out", &dir]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(out.join("generated/src/lib.rs").is_file());
    assert!(out.join(".avro/booking.requested/v1.avsc").is_file());
    assert!(out.join("docs/saga.md").is_file());

    let check = bin(&["--spec", spec, "--out", &dir, "--check"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    std::fs::write(out.join("generated/src/types.rs"), "// edited by hand\n").expect("writes");
    std::fs::remove_file(out.join("docs/saga.md")).expect("removes");
    std::fs::write(out.join(".avro/booking.requested/stray.avsc"), "{}").expect("writes");
    let check = bin(&["--spec", spec, "--out", &dir, "--check"]);
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    for stale in ["generated/src/types.rs", "docs/saga.md", ".avro/booking.requested/stray.avsc"] {
        assert!(stderr.contains(&format!("stale: {stale}")), "{stale} not listed in:\n{stderr}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_spec_error_exits_non_zero_with_diagnostics_on_stderr() {
    let dir = scratch("bad");
    let spec = dir.join("bad.yaml");
    let text = std::fs::read_to_string(example()).expect("reads").replace("publisher: seats", "publisher: seat");
    std::fs::write(&spec, text).expect("writes");
    let run = bin(&["--spec", spec.to_str().expect("utf-8 path"), "--out", dir.to_str().expect("utf-8 path")]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("unknown service `seat`"), "{stderr}");
    assert!(stderr.contains("bad.yaml:"), "{stderr}");
    assert!(stderr.contains("did you mean `seats`?"), "{stderr}");
    assert!(!dir.join("generated").exists(), "nothing is written for a bad spec");
    let _ = std::fs::remove_dir_all(&dir);
}
