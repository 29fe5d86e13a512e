//! Hardening, driven through the binary as an attacker or a careless user would: credentials in
//! `--repo`, hostile characters in free-text fields, unbounded inputs, closed output streams
//! and invalid map keys.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

const GEN: &str = "2021-07-15";

fn gke_text() -> String {
    std::fs::read_to_string(repo_path("examples/gke-daily/snaproll.yaml")).unwrap()
}

fn out_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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

// ---------------------------------------------------------------------------------------------
// YAML every reader agrees on

/// Strings that YAML readers disagree on or refuse when written raw, and strings YAML 1.1 types
/// (the characters validation refuses are in [`unportable_strings`]).
fn hostile_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        '\u{1}',
        '\u{8}',
        '\u{b}',
        '\u{1b}',
        '\u{1f}',
        '\u{a0}',
        '\u{2028}',
        '\u{2029}',
        '\u{feff}',
        '\u{fdd0}',
        '\u{fdef}',
        '\u{1fffe}',
        '\u{1ffff}',
        '\u{10ffff}',
    ]
    .iter()
    .map(|c| format!("a{c}b"))
    .collect();
    v.extend(
        [
            "line\nbreak",
            "tab\tand\rreturn",
            "\"quoted\" and \\back",
            "# comment",
            "key: value",
            "{{ 7*7 }}",
            "&anchor *alias !tag",
            "2021-07-15",
            "0755",
            "yes",
            "~",
            " lead",
            "trail ",
            "- item",
            "\u{1b}[31mred\u{1b}[0m",
        ]
        .map(str::to_string),
    );
    v
}

/// A spec with the hostile strings in every free-text field.
fn hostile_spec() -> Value {
    let mut doc: Value = snaproll::yaml::from_str(&gke_text()).unwrap();
    let hostile = hostile_strings();
    let params: serde_json::Map<String, Value> = hostile
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("p{i}{s}"), json!(s)))
        .collect();
    doc["spec"]["snapshotClass"]["parameters"] = Value::Object(params);
    let env: Vec<Value> = hostile
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"name": format!("V{i}"), "value": s}))
        .collect();
    let d = &mut doc["spec"]["datasets"][0];
    d["producer"]["command"] = json!(hostile);
    d["producer"]["args"] = json!(hostile);
    d["producer"]["env"] = json!(env);
    d["producer"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
    d["producer"]["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "data_1.x", "effect": "NoSchedule"}]);
    d["consumer"]["command"] = json!(hostile);
    d["consumer"]["args"] = json!(hostile);
    d["consumer"]["env"] = json!(env);
    doc
}

/// The documents of each file as PyYAML (a YAML 1.1 reader, like go-yaml) reads them, or
/// `None` when python3 with PyYAML is not installed.
fn pyyaml_docs(files: &[PathBuf]) -> Option<Vec<Vec<Value>>> {
    let probe = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    let script = "import sys, json, yaml\n\
                  print(json.dumps([list(yaml.safe_load_all(open(p, encoding='utf-8'))) for p in sys.argv[1:]]))";
    let out = Command::new("python3")
        .args(["-c", script])
        .args(files)
        .output()
        .unwrap();
    assert!(out.status.success(), "PyYAML: {}", out_text(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// kubectl: on PATH, in $KUBEBUILDER_ASSETS, or the one the end-to-end tests build.
fn kubectl() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        candidates.push(PathBuf::from(dir).join("kubectl"));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(cache) = cache
        && let Ok(entries) = std::fs::read_dir(cache.join("snaproll/control-plane"))
    {
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path().join("kubectl")))
            .collect();
        found.sort();
        candidates.extend(found.into_iter().rev());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("kubectl")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Hostile values in every free-text field render to files that serde-saphyr, PyYAML and
/// `kubectl kustomize` all read back as exactly the input.
#[test]
fn rendered_yaml_reads_back_exactly_in_every_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("hostile.yaml");
    std::fs::write(&spec, snaproll::yaml::to_string(&hostile_spec())).unwrap();
    snaproll()
        .arg("validate")
        .arg("-f")
        .arg(&spec)
        .args(["--generation", GEN])
        .assert()
        .code(0);
    let out = tmp.path().join("out");
    snaproll()
        .arg("render")
        .arg("-f")
        .arg(&spec)
        .args(["--generation", GEN, "--out"])
        .arg(&out)
        .assert()
        .code(0);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "kustomization.yaml")
        .collect();
    files.sort();
    let ours: Vec<Value> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            for c in text.chars() {
                assert!(
                    c == '\n'
                        || !(c.is_control()
                            || matches!(
                                c,
                                '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                            )),
                    "{} holds {c:?} raw",
                    f.display()
                );
            }
            serde_saphyr::from_str::<Value>(&text).unwrap()
        })
        .collect();

    // The values arrive as written.
    let hostile = json!(hostile_strings());
    let pod = ours.iter().find(|o| o["kind"] == "Pod").unwrap();
    assert_eq!(pod["spec"]["containers"][0]["args"], hostile);
    assert_eq!(pod["spec"]["containers"][0]["command"], hostile);
    let sts = ours.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
    let consumer = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(consumer["args"], hostile);
    assert_eq!(
        consumer["env"][2]["value"],
        json!(hostile_strings()[2]),
        "{consumer}"
    );
    let class = ours
        .iter()
        .find(|o| o["kind"] == "VolumeSnapshotClass")
        .unwrap();
    assert_eq!(
        class["parameters"]["p6a\u{2028}b"],
        json!("a\u{2028}b"),
        "{class}"
    );

    match pyyaml_docs(&files) {
        Some(docs) => {
            for ((f, mine), theirs) in files.iter().zip(&ours).zip(docs) {
                assert_eq!(
                    theirs,
                    vec![mine.clone()],
                    "PyYAML reads {} differently",
                    f.display()
                );
            }
        }
        None => println!("skipped: python3 with PyYAML is not installed"),
    }

    match kubectl() {
        Some(kubectl) => {
            let out = Command::new(&kubectl)
                .arg("kustomize")
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "kubectl kustomize refused the folder: {}",
                out_text(&out.stderr)
            );
            // go-yaml writes what it read for go-yaml (YAML 1.1 line breaks) to read: read its
            // output with the YAML 1.1 reader, PyYAML.
            let built = tmp.path().join("kustomized.yaml");
            std::fs::write(&built, &out.stdout).unwrap();
            let Some(mut docs) = pyyaml_docs(std::slice::from_ref(&built)) else {
                println!(
                    "skipped: kustomize output not compared, python3 with PyYAML is not installed"
                );
                return;
            };
            let mut theirs = docs.remove(0);
            let key = |v: &Value| format!("{}/{}", v["kind"], v["metadata"]["name"]);
            theirs.sort_by_key(key);
            let mut mine = ours.clone();
            mine.sort_by_key(key);
            assert_eq!(
                theirs,
                mine,
                "kubectl kustomize ({}) reads the folder differently",
                kubectl.display()
            );
        }
        None => println!("skipped: no kubectl on PATH, in KUBEBUILDER_ASSETS or the test cache"),
    }
}

/// The characters go-yaml cannot carry (kustomize refuses DEL, C1 and U+FFFE/FFFF even
/// escaped, and passes NEL on raw for YAML 1.1 readers to fold): refused by validation, in
/// values and keys, with their location.
#[test]
fn validation_refuses_what_kustomize_cannot_carry() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("snaproll.yaml");
    for c in [
        '\u{7f}', '\u{80}', '\u{85}', '\u{9f}', '\u{fffe}', '\u{ffff}',
    ] {
        let text = gke_text().replace(
            "args: [\"echo \\\"generated at $(date -u)\\\" > /data/file.txt\"]",
            &format!("args: [\"ok\", \"x\\u{:04X}y\"]", c as u32),
        );
        std::fs::write(&spec, &text).unwrap();
        let out = snaproll()
            .current_dir(tmp.path())
            .args(["validate", "-f", "snaproll.yaml"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{c:?}");
        let why = if c == '\u{85}' {
            "YAML 1.1 readers (go-yaml in kubectl, kustomize, Argo CD and Flux) read it as a line break, so the cluster would get another value"
        } else {
            "kubectl kustomize (and so Argo CD and Flux) refuses any YAML holding it, even escaped"
        };
        assert_eq!(
            out_text(&out.stderr),
            format!(
                "error: snaproll.yaml:24:22: spec.datasets[0].producer.args[1]: `x{}y` contains U+{:04X}: {why}\n",
                c.escape_debug(),
                c as u32
            )
        );
    }
    // In a key: named with its map.
    let text = gke_text().replace(
        "    deletionPolicy: Delete",
        "    deletionPolicy: Delete\n    parameters:\n      \"k\\x85\": v",
    );
    std::fs::write(&spec, &text).unwrap();
    snaproll()
        .current_dir(tmp.path())
        .args(["validate", "-f", "snaproll.yaml"])
        .assert()
        .code(2)
        .stderr("error: snaproll.yaml:16:16: spec.snapshotClass.parameters: key `k\\u{85}` contains U+0085: YAML 1.1 readers (go-yaml in kubectl, kustomize, Argo CD and Flux) read it as a line break, so the cluster would get another value\n");
}

// ---------------------------------------------------------------------------------------------
// Bounded reads

/// Runs the binary with a deadline; returns (exit code, stderr, elapsed).
fn bounded_run(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let out = snaproll()
        .args(args)
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    (out.status.code(), out_text(&out.stderr), started.elapsed())
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Devices, FIFOs, symlinks to them and over-size files are refused at once, as `-f` and as
/// `--templates` files: exit 2, no hang, no unbounded read.
#[test]
fn specs_and_templates_must_be_bounded_regular_files() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo.yaml");
    mkfifo(&fifo);
    let link = tmp.path().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let big = tmp.path().join("big.yaml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(snaproll::spec::MAX_SPEC_BYTES + 1).unwrap();
    let dev = Path::new("/dev/zero");
    let mut worst = Duration::ZERO;
    for (path, message) in [
        (dev, "error: /dev/zero: not a regular file (it is a character device); expected a file or - for stdin\n".to_string()),
        (&fifo, format!("error: {}: not a regular file (it is a FIFO); expected a file or - for stdin\n", fifo.display())),
        (&link, format!("error: {}: not a regular file (it is a character device); expected a file or - for stdin\n", link.display())),
        (&big, format!("error: {}: the file is 16777217 bytes, over the 16777216-byte limit for a rollout spec\n", big.display())),
    ] {
        for cmd in ["validate", "render", "install"] {
            let (code, err, took) = bounded_run(&[cmd.as_ref(), "-f".as_ref(), path.as_os_str()]);
            assert_eq!(code, Some(2), "{cmd} {}: {err}", path.display());
            assert_eq!(err, message, "{cmd} {}", path.display());
            worst = worst.max(took);
        }
    }

    // The same through --templates: a template that is a FIFO, a symlink to a device, too big.
    let spec = tmp.path().join("snaproll.yaml");
    std::fs::write(&spec, gke_text()).unwrap();
    for (name, make) in [
        ("fifo", &(|p: &Path| mkfifo(p)) as &dyn Fn(&Path)),
        ("zero", &|p: &Path| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        }),
        ("big", &|p: &Path| {
            std::fs::File::create(p)
                .unwrap()
                .set_len(snaproll::render::MAX_TEMPLATE_BYTES + 1)
                .unwrap()
        }),
    ] {
        let dir = tmp.path().join(format!("templates-{name}"));
        std::fs::create_dir(&dir).unwrap();
        let template = dir.join("pod.yaml.j2");
        make(&template);
        let (code, err, took) = bounded_run(&[
            "render".as_ref(),
            "-f".as_ref(),
            spec.as_os_str(),
            "--templates".as_ref(),
            dir.as_os_str(),
        ]);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(
            err.starts_with(&format!(
                "error: loading templates: template: {}: ",
                template.display()
            )),
            "{name}: {err}"
        );
        worst = worst.max(took);
    }
    println!("slowest refusal: {worst:?}");
    assert!(worst < Duration::from_secs(5), "{worst:?}");
}

/// `-f -` reads the spec from stdin, as kubectl does, up to the same limit.
#[test]
fn spec_from_stdin() {
    let text = gke_text();
    let from_file = snaproll()
        .args([
            "render",
            "-f",
            "examples/gke-daily/snaproll.yaml",
            "--generation",
            GEN,
        ])
        .output()
        .unwrap();
    let from_stdin = snaproll()
        .args(["render", "-f", "-", "--generation", GEN])
        .write_stdin(text.clone())
        .output()
        .unwrap();
    assert!(
        from_stdin.status.success(),
        "{}",
        out_text(&from_stdin.stderr)
    );
    assert_eq!(from_stdin.stdout, from_file.stdout);
    snaproll()
        .args(["validate", "-f", "-", "--generation", GEN])
        .write_stdin(text.clone())
        .assert()
        .code(0)
        .stdout("<stdin>: valid (1 dataset, 6 objects at generation 2021-07-15)\n");
    // install embeds exactly what it read.
    let out = snaproll()
        .args(["install", "-f", "-"])
        .write_stdin(text.clone())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out_text(&out.stderr));
    assert!(out_text(&out.stdout).contains("kind: ConfigMap"));
    // Errors name the input as <stdin>.
    snaproll()
        .args(["validate", "-f", "-"])
        .write_stdin(text.replace("replicas: 3", "replicas: -1"))
        .assert()
        .code(2)
        .stderr("error: <stdin>:31:19: spec.datasets[0].consumer.replicas: must be 0 or more (got -1)\n");
    // An endless stream stops at the limit.
    let started = Instant::now();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("snaproll"))
        .args(["validate", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'#'; 1 << 16];
        // Until the reader stops: a broken pipe ends the loop.
        while stdin.write_all(&chunk).is_ok() {}
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        out_text(&out.stderr),
        "error: <stdin>: more than 16777216 bytes, over the limit\n"
    );
    println!("endless stdin refused in {:?}", started.elapsed());
}

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

// ---------------------------------------------------------------------------------------------
// Keys and label values

#[test]
fn node_selector_and_toleration_keys_are_qualified_names() {
    let text = gke_text().replace(
        "        mountPath: /data\n      generations:",
        "        mountPath: /data
        nodeSelector:
          \"a\\\"b\": x
          kubernetes.io/os: \"linux os\"
          \"\": y
          Example.com/x: z
        tolerations:
          - key: \"{{ 7*7 }}\"
            operator: Exists
          - key: dedicated
            operator: Equal
            value: \"a/b\"
      generations:",
    );
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("snaproll.yaml");
    std::fs::write(&spec, text).unwrap();
    let out = snaproll()
        .current_dir(tmp.path())
        .args(["validate", "-f", "snaproll.yaml"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(out.stdout.is_empty());
    assert_eq!(
        out_text(&out.stderr),
        "error: snaproll.yaml:27:19: spec.datasets[0].producer.nodeSelector: key `a\\\"b` is not a qualified name: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit, after an optional DNS subdomain prefix and `/` (e.g. `kubernetes.io/os`)
error: snaproll.yaml:28:29: spec.datasets[0].producer.nodeSelector.kubernetes.io/os: value of `kubernetes.io/os`: `linux os` is not a valid label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit (or empty)
error: snaproll.yaml:29:15: spec.datasets[0].producer.nodeSelector: key `` is not a qualified name: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit, after an optional DNS subdomain prefix and `/` (e.g. `kubernetes.io/os`)
error: snaproll.yaml:30:26: spec.datasets[0].producer.nodeSelector: key `Example.com/x`: the prefix before `/` must be a DNS subdomain of at most 253 characters (lower-case letters, digits, `-` and `.`), e.g. `kubernetes.io/os`
error: snaproll.yaml:32:18: spec.datasets[0].producer.tolerations[0].key: key `{{ 7*7 }}` is not a qualified name: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit, after an optional DNS subdomain prefix and `/` (e.g. `kubernetes.io/os`)
error: snaproll.yaml:36:20: spec.datasets[0].producer.tolerations[1].value: `a/b` is not a valid label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit (or empty)
"
    );
    // A 100 kB key (an explicit key: implicit ones stop at 1,024 characters) is named briefly.
    let long = gke_text().replace(
        "        mountPath: /data\n      generations:",
        &format!(
            "        mountPath: /data\n        nodeSelector:\n          ? {}\n          : x\n      generations:",
            "k".repeat(100_000)
        ),
    );
    std::fs::write(&spec, long).unwrap();
    let out = snaproll()
        .current_dir(tmp.path())
        .args(["validate", "-f", "snaproll.yaml"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = out_text(&out.stderr);
    assert!(err.len() < 400, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: snaproll.yaml:28:13: spec.datasets[0].producer.nodeSelector: key `{}…` is not a qualified name",
            "k".repeat(40)
        )),
        "{err}"
    );
}
