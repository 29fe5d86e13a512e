//! Credentials in `--repo` are never shown or stored.

use super::*;

// ---------------------------------------------------------------------------------------------
// Credentials

/// A secret holding every character that ends a URL part: `/`, `@`, `:`, `%`, `#` and `?`.
const SECRET: &str = "s3:cr/3t@x%2F#q?";
/// Parts of the secret that must never be seen (as written, and decoded).
const SECRET_PARTS: [&str; 4] = ["cr/3t", "3t@x", "cr%2F3t", "x/#q"];

/// Every form of remote Git accepts, with the secret in it, and its form without the secret.
/// All point at closed ports or missing paths, so every run fails fast.
fn credential_forms() -> Vec<(String, String)> {
    vec![
        (
            format!("https://bot:{SECRET}@127.0.0.1:1/x.git"),
            "https://127.0.0.1:1/x.git".into(),
        ),
        (
            format!("http://{SECRET}@127.0.0.1:1/x.git"),
            "http://127.0.0.1:1/x.git".into(),
        ),
        (
            format!("ssh://git:{SECRET}@127.0.0.1:1/x.git"),
            "ssh://git@127.0.0.1:1/x.git".into(),
        ),
        (
            format!("bot:{SECRET}@127.0.0.1:org/x.git"),
            "bot@127.0.0.1:org/x.git".into(),
        ),
        (
            format!("file://bot:{SECRET}@/nonexistent/x.git"),
            "file://bot@/nonexistent/x.git".into(),
        ),
    ]
}

fn assert_no_secret(what: &str, text: &str) {
    for part in SECRET_PARTS {
        assert!(!text.contains(part), "{what} shows {part:?}:\n{text}");
    }
}

/// A run of `reconcile` at trace level, in text and JSON logs: the secret appears nowhere, not
/// in the output, the logs, the error, or the Git config of the clone kept in --workdir.
#[test]
fn reconcile_never_shows_or_stores_a_url_secret_in_any_form() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("snaproll.yaml");
    std::fs::write(&spec, gke_text()).unwrap();
    std::fs::create_dir_all(tmp.path().join("home")).unwrap();
    for (i, (url, public)) in credential_forms().into_iter().enumerate() {
        for format in ["text", "json"] {
            let workdir = tmp.path().join(format!("work-{i}-{format}"));
            let started = Instant::now();
            let out = snaproll()
                .env("HOME", tmp.path().join("home"))
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env_remove("SNAPROLL_GIT_TOKEN")
                .env_remove("SSH_AUTH_SOCK")
                .args(["--log-level", "trace", "--log-format", format])
                .args(["reconcile", "-f"])
                .arg(&spec)
                .args([
                    "--repo",
                    &url,
                    "--generation",
                    GEN,
                    "--offline",
                    "--workdir",
                ])
                .arg(&workdir)
                .timeout(Duration::from_secs(60))
                .output()
                .unwrap();
            let all = format!("{}{}", out_text(&out.stdout), out_text(&out.stderr));
            assert_eq!(out.status.code(), Some(3), "{url} ({format}):\n{all}");
            assert_no_secret(&format!("{url} ({format})"), &all);
            assert!(
                all.contains(&public),
                "{url} ({format}) names {public}:\n{all}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{url}: {:?}",
                started.elapsed()
            );
            let config = std::fs::read_to_string(workdir.join("config")).unwrap();
            assert_no_secret(&format!("{url}: git config"), &config);
            assert!(
                config.contains(&format!("url = {public}\n")),
                "{url}:\n{config}"
            );
        }
    }
}

/// `install` refuses a URL with a secret (exit 2, nothing on stdout) and gives the command that
/// stores it in the Secret the CronJob reads; the secret is in no output or log.
#[test]
fn install_refuses_a_repo_url_with_a_secret_and_says_where_it_belongs() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("snaproll.yaml");
    std::fs::write(&spec, gke_text()).unwrap();
    let run = |url: &str, format: &str| {
        let out = snaproll()
            .args([
                "--log-level",
                "trace",
                "--log-format",
                format,
                "install",
                "-f",
            ])
            .arg(&spec)
            .args(["--repo", url])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{url}: {}",
            out_text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{url}: {}", out_text(&out.stdout));
        let err = out_text(&out.stderr);
        assert_no_secret(url, &err);
        err
    };
    for (url, _) in credential_forms() {
        run(&url, "text");
        let json = run(&url, "json");
        for line in json.lines() {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    }
    assert_eq!(
        run(
            &format!("https://bot:{SECRET}@git.example.com/ops.git"),
            "text"
        ),
        "error: --repo holds a credential, which would be written in plain text into the CronJob; \
         store it in the Secret the CronJob reads: `kubectl -n default create secret generic \
         snaproll-git --from-literal=username=bot --from-literal=token=<the password from --repo>`, \
         then pass --repo https://git.example.com/ops.git\n"
    );
    assert_eq!(
        run("https://ghp_abcdef@git.example.com/ops.git", "text"),
        "error: --repo holds a credential, which would be written in plain text into the CronJob; \
         store it in the Secret the CronJob reads: `kubectl -n default create secret generic \
         snaproll-git --from-literal=token=<the token from --repo>`, \
         then pass --repo https://git.example.com/ops.git\n"
    );
    assert_eq!(
        run(&format!("bot:{SECRET}@git.example.com:ops.git"), "text"),
        "error: --repo holds a credential, which would be written in plain text into the CronJob; \
         store it in the Secret the CronJob reads: `kubectl -n default create secret generic \
         snaproll-git --from-file=ssh-privatekey=<key file> \
         --from-file=known_hosts=<(ssh-keyscan git.example.com)`, \
         then pass --repo bot@git.example.com:ops.git\n"
    );
    // Without a secret, install renders as before.
    snaproll()
        .args(["install", "-f"])
        .arg(&spec)
        .args(["--repo", "https://git.example.com/ops.git"])
        .assert()
        .code(0);
}
