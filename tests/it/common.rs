//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root (where Cargo.toml is).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under the repository root.
pub fn repo_path(rel: &str) -> PathBuf {
    root().join(rel)
}

/// The `snaproll` binary as a command, with an environment that cannot leak the developer's
/// settings into a test (no SNAPROLL_* or KUBECONFIG, no colour).
pub fn snaproll() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("snaproll").expect("snaproll binary built");
    for (k, _) in std::env::vars() {
        if k.starts_with("SNAPROLL_") || k == "KUBECONFIG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1").current_dir(root());
    cmd
}

/// Replaces a temporary directory's path in command output with `[TMP]`, for snapshots.
pub fn scrub(text: &str, tmp: &Path) -> String {
    text.replace(&tmp.display().to_string(), "[TMP]")
}
