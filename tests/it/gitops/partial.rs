//! Offline runs that redo only the datasets whose inputs changed commit exactly what the full
//! run commits: the same folder, message and report, run after run, whatever changes (a
//! dataset's fields, its generation, datasets added or removed, the shared inputs); the table
//! they rely on is used only for the head it describes. Every run here also checks itself in
//! the debug build (the partial step is compared with the full one in-process); these tests
//! compare whole repositories besides, with a twin that has no table and so always runs in full.

use super::*;

/// One dataset of a generated spec.
#[derive(Clone, Debug)]
struct Ds {
    name: String,
    replicas: u32,
    size: u32,
    image: &'static str,
}

fn spec_of(datasets: &[Ds], class_param: &str) -> String {
    let mut s = SPEC_HEAD.replace(
        "    deletionPolicy: Delete\n",
        &format!("    deletionPolicy: Delete\n    parameters: {{type: {class_param}}}\n"),
    );
    for d in datasets {
        s.push_str(&format!(
            "    - name: {}
      storage: {{storageClassName: standard-rwo, size: {}Gi}}
      producer:
        image: ubuntu:22.04
        command: [\"/bin/sh\", \"-c\"]
        args: [\"echo hi > /data/file.txt\"]
      consumer:
        name: {}-reader
        replicas: {}
        image: {}
",
            d.name, d.size, d.name, d.replicas, d.image
        ));
    }
    s
}

/// `reconcile --offline -o json` in `repo` with SNAPROLL_LOG=debug and `--generation` for each
/// id in `generation` up to the first flag (passed on as given): (report, whether the run was
/// partial).
fn run(env: &Env, repo: &Path, generation: &[&str]) -> (serde_json::Value, bool) {
    let mut cmd = snaproll();
    cmd.env("HOME", env.home())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("SNAPROLL_LOG", "debug")
        .args(["reconcile", "--offline", "-o", "json", "-f"])
        .arg(env.path("snaproll.yaml"))
        .args(["--repo", repo.to_str().unwrap()]);
    // Generation ids, then (from the first flag on) other arguments as given.
    let flags = generation
        .iter()
        .position(|g| g.starts_with("--"))
        .unwrap_or(generation.len());
    for g in &generation[..flags] {
        cmd.args(["--generation", g]);
    }
    cmd.args(&generation[flags..]);
    let out = cmd
        .args([
            "--author-name",
            "Snap Bot",
            "--author-email",
            "bot@example.com",
        ])
        .assert()
        .success();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let v = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    (v, err.contains("partial run"))
}

/// `src` copied to `dst` (a repository with its working tree), without the kept table: a twin
/// that can only run in full.
fn twin(src: &Path, dst: &Path) {
    let _ = std::fs::remove_dir_all(dst);
    let status = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(dst.join(".git/snaproll"));
}

/// The report without what differs between two repositories by construction (commit ids).
fn comparable(mut v: serde_json::Value) -> serde_json::Value {
    for key in ["commit", "head"] {
        v.as_object_mut().unwrap().remove(key);
    }
    v
}

/// Runs in `repo` and in a table-less twin of it; both must commit the same folder and
/// message and report the same. Returns whether `repo`'s run was partial.
fn run_both(env: &Env, repo: &Path, generation: &[&str]) -> bool {
    let full = env.path("twin");
    let existed = repo.exists();
    if existed {
        twin(repo, &full);
    }
    let (v, partial) = run(env, repo, generation);
    if !existed {
        return partial;
    }
    let (w, twin_partial) = run(env, &full, generation);
    assert!(!twin_partial, "a repository without a table ran partially");
    assert_eq!(comparable(v), comparable(w), "reports differ");
    let folder = "HEAD:rollouts/demo";
    assert_eq!(
        env.git(repo, &["rev-parse", folder]),
        env.git(&full, &["rev-parse", folder]),
        "folders differ"
    );
    assert_eq!(
        env.git(repo, &["log", "-1", "--format=%B"]),
        env.git(&full, &["log", "-1", "--format=%B"]),
        "commit messages differ"
    );
    assert_eq!(env.git(repo, &["status", "--porcelain"]), "");
    partial
}

fn ds(name: &str) -> Ds {
    Ds {
        name: name.to_string(),
        replicas: 2,
        size: 10,
        image: "ubuntu:22.04",
    }
}

#[test]
fn one_changed_dataset_is_redone_alone_and_commits_what_the_full_run_commits() {
    let env = Env::new();
    let repo = env.path("gitops");
    let mut datasets: Vec<Ds> = ["a", "b", "c", "d"].map(ds).to_vec();
    let write = |d: &[Ds]| std::fs::write(env.path("snaproll.yaml"), spec_of(d, "pd")).unwrap();
    write(&datasets);
    let g = ["2021-07-15"];
    assert!(!run_both(&env, &repo, &g), "a first run is a full run");
    datasets[1].replicas = 5;
    write(&datasets);
    assert!(
        run_both(&env, &repo, &g),
        "one dataset changed: a partial run"
    );
    let msg = env.git(&repo, &["log", "-1", "--format=%s"]);
    assert_eq!(
        msg.trim(),
        "snaproll: demo 2021-07-15: 0 added, 1 changed, 0 removed"
    );
    // Its report still names every dataset.
    let (v, partial) = run(&env, &repo, &g);
    assert!(
        !partial,
        "the same inputs again: the no-op, not a partial run"
    );
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .starts_with("snaproll: nothing to do"),
        "{v}"
    );

    // A spec edit that changes no dataset (a comment): a partial run with nothing to redo
    // commits nothing.
    let text = std::fs::read_to_string(env.path("snaproll.yaml")).unwrap();
    std::fs::write(env.path("snaproll.yaml"), format!("# edited\n{text}")).unwrap();
    let (v, partial) = run(&env, &repo, &g);
    assert!(partial, "{v}");
    assert_eq!(v["commit"], serde_json::Value::Null, "{v}");
    let datasets_seen: Vec<&str> = v["generations"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["dataset"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(datasets_seen, ["a", "b", "c", "d"], "{v}");
}

#[test]
fn the_table_stands_only_for_the_head_it_was_written_for() {
    let env = Env::new();
    let repo = env.path("gitops");
    let mut datasets: Vec<Ds> = ["a", "b", "c"].map(ds).to_vec();
    let write = |d: &[Ds]| std::fs::write(env.path("snaproll.yaml"), spec_of(d, "pd")).unwrap();
    write(&datasets);
    let g = ["2021-07-15"];
    run_both(&env, &repo, &g);
    let table_dir = repo.join(".git/snaproll");
    let table = std::fs::read_dir(&table_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();

    // Someone commits on top (outside the folder): the head is not the table's.
    std::fs::write(repo.join("README.md"), "notes\n").unwrap();
    env.git(&repo, &["add", "README.md"]);
    env.git(&repo, &["commit", "-q", "-m", "notes"]);
    datasets[0].replicas = 3;
    write(&datasets);
    assert!(!run_both(&env, &repo, &g), "another head: the full run");
    // That full run recorded the fingerprint and a table for its commit: partial again.
    datasets[0].replicas = 4;
    write(&datasets);
    assert!(run_both(&env, &repo, &g));

    // A table that cannot be read, or names files the head lacks: the full run, no failure.
    std::fs::write(&table, b"{not json").unwrap();
    datasets[1].replicas = 4;
    write(&datasets);
    assert!(!run_both(&env, &repo, &g));
    let text = std::fs::read_to_string(&table).unwrap();
    let broken = text.replace("statefulset-a-reader", "statefulset-gone");
    assert_ne!(text, broken);
    std::fs::write(&table, broken).unwrap();
    datasets[0].replicas = 5;
    write(&datasets);
    assert!(!run_both(&env, &repo, &g), "a table naming missing files");

    // A shared input changed (the snapshot class; the date): the full run.
    std::fs::write(env.path("snaproll.yaml"), spec_of(&datasets, "ssd")).unwrap();
    assert!(!run_both(&env, &repo, &g));
    assert!(!run_both(&env, &repo, &["2021-07-16"]));
    // One dataset's own generation: partial.
    assert!(run_both(&env, &repo, &["2021-07-16", "b=2021-07-17"]));
    // A shared input that changes no byte of the folder (templates given, the same as the
    // embedded ones, as after an upgrade): one full run commits nothing but keeps a table for
    // the head, so the next run with those inputs redoes nothing.
    // (First the step left over: b's old snapshot leaves Git one run after its StatefulSet.)
    run_both(&env, &repo, &["2021-07-16", "b=2021-07-17"]);
    let templates = env.path("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let service = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/service.yaml.j2");
    std::fs::copy(service, templates.join("service.yaml.j2")).unwrap();
    let t = templates.to_str().unwrap();
    let gt = ["2021-07-16", "b=2021-07-17", "--templates", t];
    let (v, partial) = run(&env, &repo, &gt);
    assert!(!partial && v["commit"].is_null(), "{v}");
    let (v, partial) = run(&env, &repo, &gt);
    assert!(partial && v["commit"].is_null(), "{v}");
    // A dataset removed: the full run (it leaves Git over two runs, objects held meanwhile).
    datasets.remove(2);
    std::fs::write(env.path("snaproll.yaml"), spec_of(&datasets, "ssd")).unwrap();
    assert!(!run_both(&env, &repo, &["2021-07-16", "b=2021-07-17"]));
    assert!(!run_both(&env, &repo, &["2021-07-16", "b=2021-07-17"]));
    // Added: partial.
    datasets.push(ds("e"));
    std::fs::write(env.path("snaproll.yaml"), spec_of(&datasets, "ssd")).unwrap();
    run_both(&env, &repo, &["2021-07-16", "b=2021-07-17"]);
    datasets[0].image = "ubuntu:24.04";
    std::fs::write(env.path("snaproll.yaml"), spec_of(&datasets, "ssd")).unwrap();
    assert!(run_both(&env, &repo, &["2021-07-16", "b=2021-07-17"]));
}

/// A random walk of spec and generation changes (seeded, so a failure replays): after every
/// run the repository with a table and its table-less twin hold the same commit content.
#[test]
fn random_walks_commit_what_full_runs_commit() {
    let mut partial_runs = 0;
    for seed in [7u64, 19, 42] {
        let env = Env::new();
        let repo = env.path("gitops");
        let mut rng = seed;
        let mut next = |n: u64| {
            // xorshift64: enough to pick changes, and replayable.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut datasets: Vec<Ds> = ["a", "b", "c", "d", "e"].map(ds).to_vec();
        let mut day = 15;
        let mut own: Option<(String, u32)> = None;
        // A dataset's own generation is always newer than any it had: an older one that Git
        // no longer keeps is refused (a rollback needs a kept snapshot).
        let mut own_day = 15;
        let mut added = 0;
        for _ in 0..10 {
            let i = next(datasets.len() as u64) as usize;
            match next(8) {
                0 | 1 => datasets[i].replicas = 1 + next(5) as u32,
                // The source claim's size: immutable, so the claim rolls forward.
                2 => datasets[i].size += 10,
                3 => datasets[i].image = ["ubuntu:22.04", "ubuntu:24.04"][next(2) as usize],
                4 => day += 1,
                5 => {
                    // The dataset that had its own generation falls back to the date: no older.
                    day = day.max(own_day);
                    own_day = own_day.max(day) + 1 + next(2) as u32;
                    own = Some((datasets[i].name.clone(), own_day));
                }
                6 if datasets.len() > 2 => {
                    datasets.remove(i);
                    own = None;
                    day = day.max(own_day);
                }
                _ => {
                    added += 1;
                    datasets.push(ds(&format!("n{added}")));
                }
            }
            std::fs::write(env.path("snaproll.yaml"), spec_of(&datasets, "pd")).unwrap();
            let all = format!("2021-07-{day}");
            let mut generation = vec![all];
            if let Some((name, d)) = &own {
                generation.push(format!("{name}=2021-07-{d}"));
            }
            let generation: Vec<&str> = generation.iter().map(String::as_str).collect();
            if run_both(&env, &repo, &generation) {
                partial_runs += 1;
            }
        }
    }
    assert!(
        partial_runs >= 6,
        "only {partial_runs} partial runs: the walk hardly tests them"
    );
}
