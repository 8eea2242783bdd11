//! Tests that need no running stack: only the files of the workspace (and the validators
//! they fetch once).

mod deploy_manifests;
mod scaffold;
// Written by `cargo xtask gen` (the scaffold of a participant): formatted by the generator.
#[rustfmt::skip]
mod scaffold_participant;
