//! Embeds the commit the binary was built from (`snaproll version`): `SNAPROLL_GIT_COMMIT` from
//! the environment (container builds without `.git`), else `git rev-parse HEAD`, else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SNAPROLL_GIT_COMMIT");
    let commit = std::env::var("SNAPROLL_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Rebuild when HEAD moves: the worktree's HEAD and the branch refs (a commit rewrites them).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        println!("cargo:rerun-if-changed={common}/refs/heads");
        if std::path::Path::new(&format!("{common}/packed-refs")).exists() {
            println!("cargo:rerun-if-changed={common}/packed-refs");
        }
    }
    println!("cargo:rustc-env=SNAPROLL_GIT_COMMIT={commit}");
}
