//! Day 1 to day 3 in push, pull and offline mode.

use super::*;

#[test]
fn push_mode_rolls_day_1_to_day_3_one_step_per_run() {
    let w = three_days(Mode::Push);
    // Git followed every step too: the folder holds exactly day 3's generation.
    let files = w.git_files();
    assert!(
        files.iter().any(|f| f.contains("consumer-2021-07-17")),
        "{files:?}"
    );
    assert!(!files.iter().any(|f| f.contains("2021-07-16")), "{files:?}");
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&w.repo)
        .args(["fsck", "--full", "--no-dangling"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn pull_mode_commits_each_step_and_argo_cd_applying_git_does_the_rest() {
    let w = three_days(Mode::Pull);
    // snaproll itself never wrote to the cluster: every object there came from Argo CD (or the
    // controllers).
    let writes: Vec<Req> = w
        .api()
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    // One commit per step: the log reads as the rollout's history.
    let log = w.git(&["log", "--format=%s"]);
    assert!(log.lines().count() >= 12, "{log}");
    assert!(log.contains("snaproll: demo 2021-07-17"), "{log}");
}

#[test]
fn offline_mode_keeps_the_newest_generations_in_git() {
    let w = World::new(Mode::Offline, Knobs::default());
    let r = w.run(D1);
    assert_eq!(r.states("data"), [format!("{G1} rolling-out")]);
    assert!(r.committed());
    w.quiet(D1);
    let gens = |files: &[String]| -> BTreeSet<String> {
        files
            .iter()
            .filter(|f| f.contains("statefulset"))
            .map(|f| f.to_string())
            .collect()
    };
    // Day 2: the new generation in full, the previous one in full too (it serves until Argo
    // CD or Flux has brought the new one up).
    let r = w.run(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} rolling-out")]
    );
    let files = w.git_files();
    assert_eq!(gens(&files).len(), 2, "{files:?}");
    w.quiet(D2);
    // Day 3: day 1 leaves Git (keep 1), its StatefulSet first and its snapshot one run later;
    // day 2 stays until day 3 is applied.
    let r = w.run(D3);
    assert_eq!(
        r.states("data"),
        [
            format!("{G1} retiring"),
            format!("{G2} serving"),
            format!("{G3} rolling-out")
        ]
    );
    let files = w.git_files();
    let day1: Vec<&String> = files.iter().filter(|f| f.contains(G1)).collect();
    assert_eq!(
        day1,
        [&format!("40-volumesnapshot-data-{G1}.yaml")],
        "{files:?}"
    );
    w.run(D3);
    let files = w.git_files();
    assert!(!files.iter().any(|f| f.contains(G1)), "{files:?}");
    assert!(files.iter().any(|f| f.contains(G2)), "{files:?}");
    assert!(files.iter().any(|f| f.contains(G3)), "{files:?}");
    w.quiet(D3);
    // Nothing ever talked to the cluster.
    assert!(w.api().requests().is_empty());
}

#[test]
fn offline_removed_dataset_leaves_git_statefulset_first() {
    let w = World::new(
        Mode::Offline,
        Knobs {
            datasets: vec!["data", "extra"],
            ..Knobs::default()
        },
    );
    w.run(D1);
    let extra = |files: Vec<String>| -> Vec<String> {
        files.into_iter().filter(|f| f.contains("extra")).collect()
    };
    assert_eq!(extra(w.git_files()).len(), 5, "{:?}", w.git_files());
    w.set_knobs(|k| k.datasets = vec!["data"]);
    let r = w.run(D1);
    assert!(r.committed());
    assert_eq!(
        extra(w.git_files()),
        [
            "20-persistentvolumeclaim-extra.yaml".to_string(),
            format!("30-pod-extra-producer-{G1}.yaml"),
            format!("40-volumesnapshot-extra-{G1}.yaml"),
            "50-service-extra-consumer.yaml".to_string(),
        ]
    );
    let r = w.run(D1);
    assert!(r.committed());
    assert_eq!(extra(w.git_files()), Vec::<String>::new());
    w.quiet(D1);
}
