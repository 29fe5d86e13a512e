//! Bounded reads: specs and templates must be bounded regular files; the spec from stdin.

use super::*;

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
