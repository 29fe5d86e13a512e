//! Closed output streams end quietly.

use super::*;

// ---------------------------------------------------------------------------------------------
// Closed output

/// Command lines that print something and need no cluster (or fail fast without one).
fn printing_commands(tmp: &Path) -> Vec<Vec<String>> {
    // A spec big enough that render's output overflows a pipe buffer.
    let mut doc: Value = snaproll::yaml::from_str(&gke_text()).unwrap();
    let first = doc["spec"]["datasets"][0].clone();
    let datasets: Vec<Value> = (0..100)
        .map(|i| {
            let mut d = first.clone();
            d["name"] = json!(format!("data{i}"));
            d["consumer"]["name"] = json!(format!("consumer{i}"));
            d
        })
        .collect();
    doc["spec"]["datasets"] = json!(datasets);
    let spec = tmp.join("big.yaml");
    std::fs::write(&spec, snaproll::yaml::to_string(&doc)).unwrap();
    let spec = spec.display().to_string();
    let kubeconfig = tmp.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let kc = kubeconfig.display().to_string();
    let repo = tmp.join("gitops").display().to_string();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        s(&["validate", "-f", &spec, "--generation", GEN]),
        s(&["render", "-f", &spec, "--generation", GEN]),
        // Log lines on a closed stderr (tracing's writer).
        s(&[
            "--log-level",
            "trace",
            "render",
            "-f",
            &spec,
            "--generation",
            GEN,
        ]),
        s(&[
            "--log-level",
            "trace",
            "--log-format",
            "json",
            "validate",
            "-f",
            &spec,
            "--generation",
            GEN,
        ]),
        s(&["install", "-f", &spec]),
        s(&["completions", "bash"]),
        s(&["--help"]),
        s(&["render", "--help"]),
        s(&[
            "reconcile",
            "-f",
            &spec,
            "--repo",
            &repo,
            "--generation",
            GEN,
            "--offline",
            "--author-name",
            "a",
            "--author-email",
            "a@b",
        ]),
        s(&[
            "reconcile",
            "-f",
            &spec,
            "--repo",
            &repo,
            "--generation",
            GEN,
            "--offline",
            "--dry-run",
            "--author-name",
            "a",
            "--author-email",
            "a@b",
        ]),
        s(&[
            "diff",
            "-f",
            &spec,
            "--generation",
            GEN,
            "--kubeconfig",
            &kc,
        ]),
        s(&["status", "-f", &spec, "--kubeconfig", &kc]),
        s(&[
            "apply",
            "-f",
            &spec,
            "--generation",
            GEN,
            "--kubeconfig",
            &kc,
        ]),
        s(&["render", "-f", "/nonexistent.yaml"]),
    ]
}

/// Every command piped into `head -1`, with and without `2>&1`: never a panic; a closed stdout
/// ends the run quietly with status 0 (as ripgrep does), other failures keep their code.
#[test]
fn closed_pipes_end_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("snaproll");
    for args in printing_commands(tmp.path()) {
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        for redirect in ["", "2>&1"] {
            let script = format!(
                "'{}' {} {redirect} | head -1 >/dev/null; echo \"status=${{PIPESTATUS[0]}}\" >&2",
                bin.display(),
                quoted.join(" ")
            );
            let out = Command::new("bash")
                .args(["-c", &script])
                .env("NO_COLOR", "1")
                .env_remove("KUBECONFIG")
                .current_dir(tmp.path())
                .output()
                .unwrap();
            let err = out_text(&out.stderr);
            assert!(!err.contains("panicked"), "{args:?} {redirect}: {err}");
            let status: i32 = err
                .lines()
                .last()
                .and_then(|l| l.strip_prefix("status="))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{args:?} {redirect}: {err}"));
            let expected: &[i32] = match args[0].as_str() {
                "diff" | "status" | "apply" => &[4],
                _ if args.iter().any(|a| a == "/nonexistent.yaml") => &[2],
                _ => &[0],
            };
            assert!(
                expected.contains(&status),
                "{args:?} {redirect}: status {status}: {err}"
            );
        }
    }
}

/// The same with the pipe closed before the first write, deterministically: stdout, stderr
/// or both.
#[test]
fn writes_to_a_closed_pipe_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    for args in printing_commands(tmp.path()) {
        for (which, out_closed, err_closed) in [
            ("stdout", true, false),
            ("stderr", false, true),
            ("both", true, true),
        ] {
            let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("snaproll"));
            cmd.args(&args)
                .env("NO_COLOR", "1")
                .env_remove("KUBECONFIG")
                .current_dir(tmp.path());
            cmd.stdout(if out_closed { closed() } else { Stdio::piped() });
            cmd.stderr(if err_closed { closed() } else { Stdio::piped() });
            let out = cmd.output().unwrap();
            let err = out_text(&out.stderr);
            assert!(
                !err.contains("panicked"),
                "{args:?} ({which} closed): {err}"
            );
            let code = out.status.code().unwrap_or(-1);
            let expected = match args[0].as_str() {
                "diff" | "status" | "apply" => 4,
                _ if args.iter().any(|a| a == "/nonexistent.yaml") => 2,
                _ => 0,
            };
            assert_eq!(code, expected, "{args:?} ({which} closed): {err}");
            if out_closed && !err_closed {
                // Quiet: a closed stdout is not an error to report (log lines asked for stay).
                assert!(
                    expected != 0
                        || !(err.contains("error")
                            || err.contains("ERROR")
                            || err.contains("Broken pipe")),
                    "{args:?} ({which} closed): {err}"
                );
            }
        }
    }
}
