//! Rollback by pin or flag, claim cleanup, a dataset leaving the spec, and `status`.

use super::*;

#[test]
fn rollback_by_pinning_a_kept_generation_serves_it_again() {
    let w = World::new(
        Mode::Push,
        Knobs {
            keep: 2,
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    let r = w.settle(D2, 12);
    assert_eq!(
        r.states("data"),
        [format!("{G1} kept"), format!("{G2} serving")]
    );
    // keep 2: day 1's snapshot stays for rollback, its StatefulSet, claims and producer go.
    let objects: Vec<String> = w.objects().into_iter().map(|o| o.1).collect();
    assert!(objects.contains(&format!("VolumeSnapshot/data-{G1}")));
    assert!(!objects.contains(&format!("StatefulSet/consumer-{G1}")));
    assert!(!objects.contains(&format!("Pod/data-producer-{G1}")));
    w.take_events();
    // Pin day 1 in the spec: its StatefulSet comes back from the kept snapshot, and day 2
    // serves until it is ready.
    w.set_knobs(|k| k.pin = Some(G1));
    let r = w.run(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} rolling-out"), format!("{G2} serving")]
    );
    // The commit names the generation rolled back to, not the newer one still retiring.
    assert!(
        r.report["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("snaproll: demo {G1}:"))),
        "{}",
        r.report
    );
    let r = w.settle(D2, 10);
    // The generation rolled back from retires in full: its data is what was rolled back.
    assert_eq!(r.states("data"), [format!("{G1} serving")]);
    // While pinned, a new day starts nothing.
    let r = w.quiet(D3);
    assert_eq!(r.states("data"), [format!("{G1} serving")]);
    let mut back = strs(&[&format!("+StatefulSet/consumer-{G1}")]);
    back.extend(
        claims(&format!("consumer-{G1}"))
            .iter()
            .map(|c| format!("+{c}")),
    );
    back.push(format!("-StatefulSet/consumer-{G2}"));
    back.extend(
        claims(&format!("consumer-{G2}"))
            .iter()
            .map(|c| format!("-{c}")),
    );
    back.push(format!("-Pod/data-producer-{G2}"));
    back.push(format!("-VolumeSnapshot/data-{G2}"));
    assert_eq!(w.take_events(), back);
    // Unpinned, the schedule resumes with today's generation.
    w.set_knobs(|k| k.pin = None);
    let r = w.settle(D3, 12);
    assert_eq!(
        r.states("data"),
        [format!("{G1} kept"), format!("{G3} serving")]
    );
}

#[test]
fn rollback_by_the_generation_flag_lasts_while_it_is_passed_and_unkept_generations_are_refused() {
    let w = World::new(
        Mode::Push,
        Knobs {
            keep: 2,
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    w.settle(D2, 12);
    // A generation that was never kept: refused before anything is written.
    w.api().clear_requests();
    let commits = w.commits();
    let out = w
        .command(D2, &["--generation", "2021-07-14"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: reconcile of rollout demo: dataset data: --generation names generation 2021-07-14, which is not kept (no snapshot of it exists); kept generations: 2021-07-15, 2021-07-16 (raise generations.keep to keep more for rollback)"
    );
    assert!(w.api().writes().is_empty());
    assert_eq!(w.commits(), commits);
    w.check_invariants("after a refused --generation");
    // The flag rolls back to the kept day 1 while it is passed.
    let mut r = w.run_code(D2, &["--generation", G1], 0);
    assert_eq!(
        r.states("data"),
        [format!("{G1} rolling-out"), format!("{G2} serving")]
    );
    for _ in 0..8 {
        if r.states("data") == [format!("{G1} serving")] {
            break;
        }
        w.play();
        r = w.run_code(D2, &["--generation", G1], 0);
    }
    assert_eq!(r.states("data"), [format!("{G1} serving")]);
    assert!(
        !w.objects().iter().any(|o| o.1.contains(G2)),
        "{:?}",
        w.objects()
    );
    // Without the flag the daily schedule wants today's generation again: it starts anew.
    // (generations.pin is the rollback that lasts.)
    let r = w.run(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} producing")]
    );
}

#[test]
fn pinning_a_generation_that_is_not_kept_is_an_error_in_status_and_reconcile() {
    let w = serving_day1(Mode::Push, Knobs::default());
    w.settle(D2, 12);
    w.set_knobs(|k| k.pin = Some(G1));
    let (code, v, stderr) = w.status(D2);
    assert_eq!(code, 2);
    assert_eq!(v, Value::Null);
    let want = format!(
        "error: reconcile of rollout demo: dataset data: generations.pin names generation {G1}, which is not kept (no snapshot of it exists); kept generations: {G2} (raise generations.keep to keep more for rollback)"
    );
    assert_eq!(stderr.trim(), want);
    w.api().clear_requests();
    let out = w.command(D2, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), want);
    assert!(w.api().writes().is_empty());
    w.check_invariants("after a refused pin");
}

#[test]
fn clusters_without_claim_retention_get_the_old_claims_deleted_by_label() {
    let mut w = World::new(Mode::Push, Knobs::default());
    w.retention_gc = false;
    w.settle(D1, 8);
    let r = w.settle(D2, 12);
    assert_eq!(r.states("data"), [format!("{G2} serving")]);
    let pvcs = w.server.block_on(w.api().names(PVCS));
    assert_eq!(
        pvcs,
        [
            "data".to_string(),
            format!("data-consumer-{G2}-0"),
            format!("data-consumer-{G2}-1"),
            format!("data-consumer-{G2}-2"),
        ]
    );
    // And in order: the StatefulSet went before its claims, the claims before the snapshot.
    let events = w.take_events();
    let at = |e: &str| events.iter().position(|x| x == e).unwrap();
    assert!(
        at(&format!("-StatefulSet/consumer-{G1}"))
            < at(&format!("-PersistentVolumeClaim/data-consumer-{G1}-0"))
    );
    assert!(
        at(&format!("-PersistentVolumeClaim/data-consumer-{G1}-2"))
            < at(&format!("-VolumeSnapshot/data-{G1}"))
    );
}

#[test]
fn retain_claims_are_deleted_by_label_after_their_statefulset_and_retirement_completes() {
    // whenDeleted: Retain: the cluster keeps the claims; push mode's prune deletes them.
    let w = World::new(
        Mode::Push,
        Knobs {
            when_deleted: "Retain",
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    let sts = w
        .server
        .block_on(w.api().get(&format!("{STS}/consumer-{G1}")))
        .unwrap();
    assert_eq!(
        sts.pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted"),
        Some(&json!("Retain"))
    );
    w.take_events();
    let r = w.settle(D2, 12);
    assert_eq!(r.states("data"), [format!("{G2} serving")]);
    // The prune deletes the StatefulSet and then its claims in one run (the event log sees
    // them go together), the producer and the snapshot after them.
    let mut events = w.take_events();
    assert_eq!(
        events.last(),
        Some(&format!("-VolumeSnapshot/data-{G1}")),
        "{events:?}"
    );
    let mut want = day_events(G1, G2);
    events.sort();
    want.sort();
    assert_eq!(events, want);
    w.quiet(D2);
}

#[test]
fn pull_mode_without_claim_retention_names_the_cleanup_command_until_the_claims_go() {
    let mut w = World::new(Mode::Pull, Knobs::default());
    w.retention_gc = false;
    w.settle(D1, 8);
    for _ in 0..6 {
        w.run(D2);
        w.play();
    }
    // Argo CD pruned the old StatefulSet; nothing deletes its claims (the Role only lists).
    let r = w.quiet(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} retiring"), format!("{G2} serving")]
    );
    let selector = format!(
        "app.kubernetes.io/managed-by=snaproll,snaproll.dev/rollout=demo,snaproll.dev/dataset=data,snaproll.dev/generation={G1},app.kubernetes.io/component=consumer-volume"
    );
    assert_eq!(
        r.detail("data", G1),
        format!(
            "waiting for 3 PVC(s) to be deleted; in pull mode without claim retention (Kubernetes before 1.32, or whenDeleted: Retain) delete them: kubectl delete pvc -n default -l '{selector}'"
        )
    );
    let (code, status, _) = w.status(D2);
    assert_eq!(code, 0);
    assert_eq!(status[0]["generations"][0]["detail"], r.detail("data", G1));
    // The snapshot stays while the claims exist.
    assert!(
        w.objects()
            .contains(&(3, format!("VolumeSnapshot/data-{G1}")))
    );
    // The operator runs the command (played: delete the claims the selector names).
    for c in claims(&format!("consumer-{G1}")) {
        let name = c.trim_start_matches("PersistentVolumeClaim/");
        w.server.block_on(w.api().delete(&format!("{PVCS}/{name}")));
    }
    w.record("kubectl");
    let r = w.settle(D2, 6);
    assert_eq!(r.states("data"), [format!("{G2} serving")]);
    assert!(
        !w.objects().iter().any(|o| o.1.contains(G1)),
        "{:?}",
        w.objects()
    );
}

/// Day 1 with two datasets, then `extra` leaves the spec: it retires in order, one step per
/// run, while `data` keeps serving.
fn removed_dataset_retires_in_order(mode: Mode) {
    let w = World::new(
        mode,
        Knobs {
            datasets: vec!["data", "extra"],
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    w.take_events();
    w.set_knobs(|k| k.datasets = vec!["data"]);
    let r = w.run(D1);
    assert_eq!(r.states("extra"), [format!("{G1} retiring")]);
    assert_eq!(
        r.detail("extra", G1),
        "dataset removed from the spec; removing StatefulSet"
    );
    let mut steps = vec![w.take_events()];
    for _ in 0..4 {
        w.play();
        w.run(D1);
        steps.push(w.take_events());
    }
    let r = w.quiet(D1);
    assert_eq!(
        r.states("extra"),
        Vec::<String>::new(),
        "{steps:#?}\n{}",
        r.stdout
    );
    assert_eq!(r.states("data"), [format!("{G1} serving")]);
    let steps: Vec<Vec<String>> = steps.into_iter().filter(|s| !s.is_empty()).collect();
    let claims: Vec<String> = (0..3)
        .map(|i| format!("-PersistentVolumeClaim/extra-extra-consumer-{G1}-{i}"))
        .collect();
    // The StatefulSet; its claims (the cluster's retention policy, played between the runs);
    // then producer, source PVC and Service; then, a run later, the snapshot.
    let mut second = claims;
    second.extend([
        "-PersistentVolumeClaim/extra".to_string(),
        format!("-Pod/extra-producer-{G1}"),
        "-Service/extra-consumer".to_string(),
    ]);
    assert_eq!(
        steps,
        [
            vec![format!("-StatefulSet/extra-consumer-{G1}")],
            second,
            vec![format!("-VolumeSnapshot/extra-{G1}")],
        ]
    );
}

#[test]
fn removed_dataset_retires_in_order_in_push_mode() {
    removed_dataset_retires_in_order(Mode::Push);
}

#[test]
fn removed_dataset_retires_in_order_in_pull_mode() {
    removed_dataset_retires_in_order(Mode::Pull);
}

#[test]
fn status_shows_each_generation_with_its_state_and_detail() {
    let w = serving_day1(Mode::Push, Knobs::default());
    w.behave(G2, |b| b.producer_holds = true);
    w.run(D2);
    let (code, v, stderr) = w.status(D2);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(v[0]["dataset"], "data");
    assert_eq!(v[0]["generations"][0]["state"], "serving");
    assert_eq!(v[0]["generations"][0]["detail"], "3/3 replicas ready");
    assert_eq!(v[0]["generations"][1]["state"], "producing");
    assert!(v[0]["generations"][1]["firstSeen"].is_string());
    // The text table, with times scrubbed.
    let out = snaproll()
        .env("HOME", w.tmp.path())
        .args(["status", "-f"])
        .arg(&w.spec)
        .arg("--kubeconfig")
        .arg(&w.kubeconfig)
        .args(["--now", D2])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        lines[0],
        ["DATASET", "GENERATION", "STATE", "FIRST SEEN", "DETAIL"]
    );
    assert_eq!(lines[1][..3], ["data", G1, "serving"]);
    assert_eq!(lines[1][4], "3/3 replicas ready");
    assert_eq!(lines[2][..3], ["data", G2, "producing"]);
    assert_eq!(lines[2][4], "producer not scheduled");
    // status never writes.
    w.api().clear_requests();
    w.status(D2);
    assert!(w.api().writes().is_empty());
}
