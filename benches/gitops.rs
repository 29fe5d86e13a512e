//! Git commit benchmark (issues 3 and 15): a fresh 1,000-dataset render committed by snaproll
//! versus `git add -A && git commit` of the same files, side by side in one run, then one
//! dataset changed, then a no-op re-run.
//!
//! Run with `cargo bench --bench gitops`. Figures are medians of several runs, each into a new
//! repository; every run also checks that snaproll's commit has exactly the tree git made of
//! the same files (same output bytes). Targets, each printed as PASS or MISS:
//!
//! - first commit ≤ 1.0× git. snaproll's non-bare commit (a) also writes the 5,002 files into
//!   the working tree, which git's side gets for free when its files are written before the
//!   timer (b). Both pairings are judged: like for like, (a) against writing the files plus
//!   `git add -A && git commit` (w+b); and the strict reading, (a) against (b) alone. (a')
//!   commits into a bare repository (object database only, as for a URL remote) and is judged
//!   against (b).
//! - one dataset changed ≤ 2× git: (d) `gitops::publish` of the render with one dataset's
//!   replicas changed (its StatefulSet file rewritten in the working tree too) against (e)
//!   `git add -A && git commit` with that file already written.
//! - no-op faster than git's no-op `git add -A && git commit` (g): (f) opening the repository
//!   and reading the head's fingerprint (what a run that changes nothing needs); (c) a no-op
//!   `gitops::publish` without a fingerprint (compares every blob id) is printed too.
//!   The whole CLI run is printed for reference.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use snaproll::gitops::{self, Destination, File, Request};
use snaproll::render::{Plan, Renderer};

const DATASETS: usize = 1_000;
const RUNS: usize = 5;

/// A spec with `n` datasets, each with its own dataset and consumer names and the shared class.
fn synthetic_spec(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata:\n  name: bench\n  namespace: bench\nspec:\n  snapshotClass:\n    name: bench-class\n    driver: pd.csi.storage.gke.io\n  datasets:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "    - name: data-{i}\n      storage: {{storageClassName: standard-rwo, size: 10Gi}}\n      producer:\n        image: ubuntu:22.04\n        command: [\"/bin/sh\", \"-c\"]\n        args: [\"echo {i} > /data/file.txt\"]\n      consumer:\n        name: consumer-{i}\n        replicas: 3\n        image: ubuntu:22.04\n"
        ));
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn git(dir: &Path, args: &[&str], home: &Path) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs git, allowing a non-zero exit (a commit with nothing to commit exits 1).
fn git_may_fail(dir: &Path, args: &[&str], home: &Path) {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("git runs");
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let spec = synthetic_spec(DATASETS);
    let spec_path = tmp.path().join("snaproll.yaml");
    std::fs::write(&spec_path, &spec).unwrap();

    let loaded = snaproll::spec::parse_str("bench.yaml", &spec).expect("valid spec");
    let set = Renderer::new(None)
        .unwrap()
        .render(
            &loaded.rollout,
            &Plan::single(&loaded.rollout, "2021-07-15"),
        )
        .unwrap();
    let files: Vec<File> = set
        .files()
        .into_iter()
        .map(|(path, content)| File {
            path,
            content: content.into_bytes(),
            objects: vec![],
        })
        .collect();
    let bytes: usize = files.iter().map(|f| f.content.len()).sum();
    println!(
        "gitops bench: {DATASETS} datasets, {} files, {:.1} MB, median of {RUNS} runs",
        files.len(),
        bytes as f64 / 1e6
    );
    let req = Request {
        files: &files,
        rollout: "bench",
        generation: "2021-07-15",
        author_name: Some("bench"),
        author_email: Some("bench@example.com"),
        describe_removed: None,
        fingerprint: Some("bench-fingerprint-1"),
        fingerprint_check: None,
        scope: None,
    };
    let unfingerprinted = Request {
        fingerprint: None,
        ..req
    };
    // One dataset changed: dataset 0's replicas.
    let changed_spec = spec.replacen("replicas: 3", "replicas: 4", 1);
    let changed_loaded = snaproll::spec::parse_str("bench.yaml", &changed_spec).expect("valid");
    let changed_files: Vec<File> = Renderer::new(None)
        .unwrap()
        .render(
            &changed_loaded.rollout,
            &Plan::single(&changed_loaded.rollout, "2021-07-15"),
        )
        .unwrap()
        .files()
        .into_iter()
        .map(|(path, content)| File {
            path,
            content: content.into_bytes(),
            objects: vec![],
        })
        .collect();
    let differing: Vec<&File> = changed_files
        .iter()
        .zip(&files)
        .filter(|(a, b)| a.content != b.content)
        .map(|(a, _)| a)
        .collect();
    assert_eq!(differing.len(), 1, "one StatefulSet file differs");
    let changed_req = Request {
        files: &changed_files,
        fingerprint: Some("bench-fingerprint-2"),
        ..req
    };

    let dest = |repo: &Path| Destination::new(repo.to_str().unwrap(), "rollouts/bench");
    let publish = |repo: &Path, req: &Request<'_>| {
        let start = Instant::now();
        let out = gitops::publish(&dest(repo), req).expect("publish");
        (start.elapsed(), out)
    };
    let tree = |repo: &Path| {
        let r = git2::Repository::open(repo).unwrap();
        r.head().unwrap().peel_to_tree().unwrap().id()
    };

    let (mut a, mut a_bare, mut w, mut b) = (vec![], vec![], vec![], vec![]);
    let (mut c, mut d, mut e, mut f, mut g) = (vec![], vec![], vec![], vec![], vec![]);
    for run in 0..RUNS {
        // (w) the files written into a fresh `git init`, then (b) the git CLI commits them.
        let dir = tmp.path().join(format!("b-{run}"));
        let sub = dir.join("rollouts/bench");
        git(
            tmp.path(),
            &["init", "-q", "-b", "main", dir.to_str().unwrap()],
            &home,
        );
        let start = Instant::now();
        std::fs::create_dir_all(&sub).unwrap();
        for f in &files {
            std::fs::write(sub.join(&f.path), &f.content).unwrap();
        }
        w.push(start.elapsed());
        let start = Instant::now();
        git(&dir, &["add", "-A"], &home);
        git(&dir, &["commit", "-q", "-m", "bench"], &home);
        b.push(start.elapsed());
        // (g) git's no-op: add and a commit that finds nothing to commit.
        let start = Instant::now();
        git(&dir, &["add", "-A"], &home);
        git_may_fail(&dir, &["commit", "-q", "-m", "bench"], &home);
        g.push(start.elapsed());

        // (a) new non-bare repository, created by snaproll.
        let repo = tmp.path().join(format!("a-{run}"));
        let (t, out) = publish(&repo, &req);
        assert!(out.commit.is_some());
        a.push(t);
        assert_eq!(tree(&repo), tree(&dir), "same tree as git's");
        // (f) no-op: open and read the head's fingerprint.
        let start = Instant::now();
        let fp = gitops::Checkout::open(&dest(&repo))
            .unwrap()
            .head_fingerprint()
            .unwrap();
        f.push(start.elapsed());
        assert_eq!(fp.as_deref(), req.fingerprint);
        // (c) no-op publish without a fingerprint: every blob id compared.
        let (t, out) = publish(&repo, &unfingerprinted);
        assert!(out.commit.is_none());
        c.push(t);
        // (a') new bare repository.
        let bare = tmp.path().join(format!("a-bare-{run}.git"));
        git2::Repository::init_bare(&bare).unwrap();
        let (t, _) = publish(&bare, &req);
        a_bare.push(t);

        // (d) one dataset changed; (e) git with the changed file already written.
        let (t, out) = publish(&repo, &changed_req);
        assert_eq!(out.changes.len(), 1);
        d.push(t);
        for f in &differing {
            std::fs::write(sub.join(&f.path), &f.content).unwrap();
        }
        let start = Instant::now();
        git(&dir, &["add", "-A"], &home);
        git(&dir, &["commit", "-q", "-m", "bench"], &home);
        e.push(start.elapsed());
        assert_eq!(tree(&repo), tree(&dir), "same tree as git's");
    }
    let [a, a_bare, w, b, c, d, e, f, g] = [a, a_bare, w, b, c, d, e, f, g].map(median);
    let ratio = |x: Duration, base: Duration| x.as_secs_f64() / base.as_secs_f64();
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    for (label, t) in [
        ("(a)  snaproll first commit, new repo + working tree", a),
        (
            "(a') snaproll first commit, new bare repo          ",
            a_bare,
        ),
        ("(w)  writing the files for git (no git)            ", w),
        ("(b)  git add -A && git commit, first               ", b),
        ("(d)  snaproll, one dataset changed                 ", d),
        ("(e)  git add -A && git commit, one file changed    ", e),
        ("(f)  snaproll no-op: open + head fingerprint       ", f),
        ("(c)  snaproll no-op publish without fingerprint    ", c),
        ("(g)  git no-op add -A && commit                    ", g),
    ] {
        println!("{label}: {:>10}", ms(t));
    }
    for (label, x, base, limit) in [
        (
            "first commit <= 1.0x git, like for like (a) vs (w+b)",
            a,
            w + b,
            1.0,
        ),
        (
            "first commit <= 1.0x git, strict        (a) vs (b)  ",
            a,
            b,
            1.0,
        ),
        (
            "first commit <= 1.0x git, bare repo     (a') vs (b) ",
            a_bare,
            b,
            1.0,
        ),
        (
            "one changed  <= 2.0x git                (d) vs (e)  ",
            d,
            e,
            2.0,
        ),
        (
            "no-op faster than git                   (f) vs (g)  ",
            f,
            g,
            1.0,
        ),
        (
            "no-op publish, no fingerprint (info)    (c) vs (g)  ",
            c,
            g,
            1.0,
        ),
    ] {
        let r = ratio(x, base);
        println!("target {label} = {r:.2}x : {}", verdict(r <= limit));
    }

    // End to end through the release binary (spec parse + render + commit), for reference.
    let bin = env!("CARGO_BIN_EXE_snaproll");
    let cli = |repo: &Path| {
        let start = Instant::now();
        let out = Command::new(bin)
            .args(["reconcile", "-f"])
            .arg(&spec_path)
            .args([
                "--repo",
                repo.to_str().unwrap(),
                "--generation",
                "2021-07-15",
            ])
            .args([
                "--author-name",
                "bench",
                "--author-email",
                "bench@example.com",
            ])
            .env("HOME", &home)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        start.elapsed()
    };
    let (mut fresh, mut noop) = (vec![], vec![]);
    for run in 0..RUNS {
        let repo = tmp.path().join(format!("cli-{run}"));
        fresh.push(cli(&repo));
        noop.push(cli(&repo));
    }
    println!(
        "CLI end to end (parse + render + commit): fresh {}, no-op {}",
        ms(median(fresh)),
        ms(median(noop))
    );
    println!(
        "(the whole CLI no-op also parses and renders {DATASETS} datasets; the engine's use of the fingerprint is what makes it (f))"
    );
}
