//! `cargo xtask new service <name>`: the crate of a new saga participant, from the spec.
//! The spec decides what it handles (add the service and its events, run `cargo xtask
//! gen`, then this); the crate, its handler file, its migrations folder and the workspace
//! member are written once, and are then the service's to edit.

use std::path::Path;

use anyhow::{Context, bail};

/// What `cargo xtask new` creates.
#[derive(Debug, clap::Subcommand)]
pub enum NewCommand {
    /// A saga participant: `services/<name>/` on the service chassis, with a handler method
    /// per event the spec sends it, and `migrations/<name>/`.
    Service {
        /// The service's name in the spec's `services:`.
        name: String,
        /// The saga spec, relative to the workspace root.
        #[arg(long, default_value = "spec/saga.yaml")]
        spec: std::path::PathBuf,
    },
}

pub fn run(root: &Path, command: &NewCommand) -> anyhow::Result<()> {
    let NewCommand::Service { name, spec } = command;
    let file = spec.display().to_string();
    let source = std::fs::read_to_string(root.join(spec)).with_context(|| format!("reading {file}"))?;
    let saga = match saga_codegen::check(&file, &source) {
        Ok(saga) => saga,
        Err(errors) => {
            eprint!("{}", errors.render());
            bail!("{errors}")
        }
    };
    let files = saga_codegen::emit::rust::scaffold::service(&saga, name).map_err(anyhow::Error::msg)?;
    if let Some((path, _)) = files.iter().find(|(path, _)| root.join(path).exists()) {
        bail!("{} exists: `new service` writes a service once and never over one", path.display());
    }
    let manifest = root.join("Cargo.toml");
    let workspace = std::fs::read_to_string(&manifest).context("reading Cargo.toml")?;
    let workspace = with_member(&workspace, &format!("services/{name}"))?;
    for (path, text) in &files {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("new: wrote {}", path.strip_prefix(root).unwrap_or(&path).display());
    }
    std::fs::write(&manifest, workspace).context("writing Cargo.toml")?;
    println!("new: added services/{name} to the workspace members");
    println!(
        "new: next, write the handlers in services/{name}/src/handlers.rs and the tables in migrations/{name}/; \
         `cargo xtask up` runs it with its own database, Kafka principal and certificate"
    );
    Ok(())
}

/// The workspace manifest with `member` in its `members` list, kept sorted.
fn with_member(manifest: &str, member: &str) -> anyhow::Result<String> {
    let start = manifest.find("members = [").context("Cargo.toml has no `members = [`")?;
    let end = start + manifest[start..].find(']').context("`members` is not closed")?;
    let list = &manifest[start + "members = [".len()..end];
    let mut members: Vec<String> =
        list.split(',').map(|m| m.trim().trim_matches('"').to_string()).filter(|m| !m.is_empty()).collect();
    if members.iter().any(|m| m == member) {
        return Ok(manifest.to_string());
    }
    members.push(member.to_string());
    members.sort();
    let body: String = members.iter().map(|m| format!("    \"{m}\",\n")).collect();
    Ok(format!("{}members = [\n{body}{}", &manifest[..start], &manifest[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch workspace: the real spec, a manifest, and whatever `files` say.
    fn scratch(files: &[(&str, &str)]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("xtask-new-{}-{}", std::process::id(), files.len()));
        let _ = std::fs::remove_dir_all(&root);
        let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/saga.yaml");
        std::fs::create_dir_all(root.join("spec")).expect("scratch");
        std::fs::copy(real, root.join("spec/saga.yaml")).expect("the spec");
        std::fs::write(root.join("Cargo.toml"), "[workspace]\nmembers = [\n    \"codegen\",\n]\n").expect("manifest");
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("a folder")).expect("folder");
            std::fs::write(path, text).expect("file");
        }
        root
    }

    fn product() -> NewCommand {
        NewCommand::Service { name: "product".into(), spec: "spec/saga.yaml".into() }
    }

    #[test]
    fn a_participant_is_written_with_its_workspace_member() {
        let root = scratch(&[]);
        run(&root, &product()).expect("written");
        let handlers = std::fs::read_to_string(root.join("services/product/src/handlers.rs")).expect("handlers");
        assert!(handlers.contains("impl ProductHandler for ProductSaga"), "{handlers}");
        assert!(root.join("migrations/product/0003_product.sql").exists());
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("manifest");
        assert!(manifest.contains("    \"services/product\",\n"), "{manifest}");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn an_existing_service_is_never_written_over() {
        let root = scratch(&[("services/product/src/lib.rs", "// mine\n")]);
        let error = run(&root, &product()).expect_err("refused").to_string();
        assert!(error.contains("services/product/src/lib.rs exists"), "{error}");
        assert_eq!(std::fs::read_to_string(root.join("services/product/src/lib.rs")).expect("kept"), "// mine\n");
        assert!(!root.join("services/product/src/handlers.rs").exists(), "nothing written");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("manifest");
        assert!(!manifest.contains("services/product"), "the member is not added");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_member_is_added_in_order_once() {
        let manifest = "[workspace]\nmembers = [\n    \"codegen\",\n    \"services/user\",\n]\n\n[x]\n";
        let added = with_member(manifest, "services/shipping").expect("added");
        assert_eq!(
            added,
            "[workspace]\nmembers = [\n    \"codegen\",\n    \"services/shipping\",\n    \"services/user\",\n]\n\n[x]\n"
        );
        assert_eq!(with_member(&added, "services/shipping").expect("once"), added);
    }
}
