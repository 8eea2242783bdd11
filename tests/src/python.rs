//! Independent implementations in Python (schemathesis, fastavro), each
//! installed, pinned, into a virtualenv of its own under the stack root's
//! `.state/` folder the first time (Python 3 with `venv` and pip needed);
//! later runs reuse it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `command`; panics with its output unless it succeeds.
pub fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The virtualenv with `requirement` (e.g. `fastavro==1.13.1`) installed,
/// at `override_var`'s path if set, else under `<root>/.state/`; installs it
/// first when needed, one test at a time ([`crate::exclusively`]). A marker
/// file written last tells a complete install from an interrupted one.
/// Returns the virtualenv's `bin/` folder.
pub fn venv_bin(root: &Path, requirement: &str, override_var: &str) -> PathBuf {
    let venv = std::env::var_os(override_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".state").join(requirement.replace("==", "-")));
    crate::exclusively(&venv, || {
        let marker = venv.join(".installed");
        let bin = venv.join("bin");
        if std::fs::read_to_string(&marker).ok().as_deref() == Some(requirement) && bin.exists() {
            return bin;
        }
        if venv.exists() {
            std::fs::remove_dir_all(&venv).expect("remove an incomplete virtualenv");
        }
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(bin.join("pip")).args(["install", "--quiet", "--disable-pip-version-check", requirement]));
        std::fs::write(&marker, requirement).expect("marker");
        bin
    })
}
