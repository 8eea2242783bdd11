//! Tests that need no running stack: only the files of the workspace (and the validators
//! they fetch once).

mod deploy_manifests;
