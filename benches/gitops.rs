//! Git commit benchmark (issue 3): a fresh 1,000-dataset render committed by snaproll versus
//! `git add -A && git commit` of the same files, side by side in one run, and a no-op re-run.
//!
//! Run with `cargo bench --bench gitops`. Figures are medians of several runs, each into a new
//! repository. Targets, each printed as PASS or MISS:
//!
//! - commit: snaproll ≤ 1.5× the git CLI. snaproll's non-bare commit (a) also writes the 5,002
//!   files into the working tree, which git's side gets for free when its files are written
//!   before the timer (b). Both pairings are judged: like for like, (a) against writing the
//!   files plus `git add -A && git commit` (w+b); and the strict reading, (a) against (b) alone.
//!   (a') commits into a bare repository (object database only, no files) and is judged
//!   against (b).
//! - no-op: (c) `gitops::publish` of the same files again (open, compare in memory, write
//!   nothing) under 100 ms. The whole CLI run (parse and render 1,000 datasets, then the same
//!   no-op publish) is printed and judged against the same 100 ms for reference.

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
        fingerprint: None,
    };

    let publish = |repo: &Path| {
        let start = Instant::now();
        let out = gitops::publish(
            &Destination::new(repo.to_str().unwrap(), "rollouts/bench"),
            &req,
        )
        .expect("publish");
        (start.elapsed(), out)
    };

    let (mut a, mut a_bare, mut w, mut b, mut c) = (vec![], vec![], vec![], vec![], vec![]);
    for run in 0..RUNS {
        // (a) new non-bare repository, created by snaproll.
        let repo = tmp.path().join(format!("a-{run}"));
        let (t, out) = publish(&repo);
        assert!(out.commit.is_some());
        a.push(t);
        // (c) no-op re-run on it.
        let (t, out) = publish(&repo);
        assert!(out.commit.is_none());
        c.push(t);
        // (a') new bare repository.
        let bare = tmp.path().join(format!("a-bare-{run}.git"));
        git2::Repository::init_bare(&bare).unwrap();
        let (t, _) = publish(&bare);
        a_bare.push(t);
        // (w) the same files written into a fresh `git init`, then (b) the git CLI commits them.
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
    }
    let (a, a_bare, w, b, c) = (median(a), median(a_bare), median(w), median(b), median(c));
    let ratio = |x: Duration, base: Duration| x.as_secs_f64() / base.as_secs_f64();
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!(
        "(a)  snaproll commit, new repo + working tree : {:>10}",
        ms(a)
    );
    println!(
        "(a') snaproll commit, new bare repo           : {:>10}",
        ms(a_bare)
    );
    println!(
        "(w)  writing the files for git (no git)       : {:>10}",
        ms(w)
    );
    println!(
        "(b)  git add -A && git commit                 : {:>10}",
        ms(b)
    );
    println!(
        "(c)  snaproll no-op re-run (gitops::publish)  : {:>10}",
        ms(c)
    );
    let like = ratio(a, w + b);
    let strict = ratio(a, b);
    let bare = ratio(a_bare, b);
    println!(
        "target commit <= 1.5x git, like for like  (a) vs (w+b) = {:.2}x : {}",
        like,
        verdict(like <= 1.5)
    );
    println!(
        "target commit <= 1.5x git, strict         (a) vs (b)   = {:.2}x : {}",
        strict,
        verdict(strict <= 1.5)
    );
    println!(
        "target commit <= 1.5x git, bare repo      (a') vs (b)  = {:.2}x : {}",
        bare,
        verdict(bare <= 1.5)
    );
    println!(
        "target no-op < 100 ms, gitops::publish    (c)          = {} : {}",
        ms(c),
        verdict(c < Duration::from_millis(100))
    );

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
    let noop = median(noop);
    println!(
        "CLI end to end (parse + render + commit): fresh {}, no-op {}",
        ms(median(fresh)),
        ms(noop)
    );
    println!(
        "reference no-op < 100 ms, whole CLI run                = {} : {}",
        ms(noop),
        verdict(noop < Duration::from_millis(100))
    );
}
