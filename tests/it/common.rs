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

/// Replaces a temporary directory's path in command output with `[TMP]`, for snapshots; any
/// other `tempfile` directory (`<temp dir>/.tmpXXXXXX`) becomes `[TMP]` too.
pub fn scrub(text: &str, tmp: &Path) -> String {
    let mut out = text.replace(&tmp.display().to_string(), "[TMP]");
    let prefix = format!("{}/.tmp", std::env::temp_dir().display());
    while let Some(start) = out.find(&prefix) {
        let rest = &out[start + prefix.len()..];
        let len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        out.replace_range(start..start + prefix.len() + len, "[TMP]");
    }
    out
}

/// The binary installed as the kubectl plugin `kubectl-snaproll` in `dir`. A hard link where the
/// filesystem allows it; otherwise a copy, waited on until it can be executed: while the copy is
/// open for writing, a test on another thread that forks inherits the descriptor, and executing
/// the file fails with "Text file busy" (ETXTBSY) until that child has exec'd.
pub fn install_plugin(dir: &Path) -> PathBuf {
    let plugin = dir.join("kubectl-snaproll");
    let bin = assert_cmd::cargo::cargo_bin("snaproll");
    if std::fs::hard_link(&bin, &plugin).is_ok() {
        return plugin;
    }
    std::fs::copy(&bin, &plugin).unwrap();
    for _ in 0..100 {
        match std::process::Command::new(&plugin)
            .arg("--version")
            .output()
        {
            Err(e) if e.raw_os_error() == Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => break,
        }
    }
    plugin
}
