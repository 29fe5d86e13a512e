//! Rollout runs against the real server: no-op runs, day 1 to day 3, conflicts, refused changes.

use super::*;

/// Suite 3: once the rollout serves, reconcile and apply change nothing and write nothing.
#[test]
fn no_op_reconcile_and_apply_make_no_writes() {
    let Some(r) = Rollout::new("noop") else {
        return;
    };
    let run = r.settle(D1);
    assert_eq!(run.states(), [format!("{G1} serving")]);
    let reqs = r.quiet(D1);
    println!("no-op reconcile: {}", summary(&reqs));
    // A bare apply of the serving generation is a no-op too.
    let mark = r.c.audit_mark();
    let out = r.snaproll(&["apply", "--generation", G1]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let reqs = r.c.audit_since(mark);
    assert_quiet(&reqs);
    println!("no-op apply: {}", summary(&reqs));
}

/// Suite 1: day 1 to day 3 in push mode against the real server and controllers: the
/// StatefulSet controller creates the claims and Pods, the garbage collector removes them with
/// their StatefulSet (retention policy), PVC protection holds claims while Pods use them.
#[test]
fn push_mode_rolls_day_1_to_day_3() {
    let Some(r) = Rollout::new("push") else {
        return;
    };
    let run = r.run(D1);
    assert_eq!(run.states(), [format!("{G1} producing")]);
    let run = r.settle(D1);
    assert_eq!(run.states(), [format!("{G1} serving")]);
    r.quiet(D1);
    for (now, g) in [(D2, G2), (D3, G3)] {
        let run = r.settle(now);
        assert_eq!(run.states(), [format!("{g} serving")], "{}", run.stdout);
        r.quiet(now);
        // Only the day's generation is left: the old StatefulSet, its claims and Pods (the
        // garbage collector), its producer and its snapshot are gone.
        let names = r.c.names();
        assert_eq!(
            names.get("StatefulSet").cloned().unwrap_or_default(),
            [format!("consumer-{g}")]
        );
        assert_eq!(
            names.get("VolumeSnapshot").cloned().unwrap_or_default(),
            [format!("data-{g}")]
        );
        assert_eq!(
            names
                .get("PersistentVolumeClaim")
                .cloned()
                .unwrap_or_default(),
            [
                "data".to_string(),
                format!("data-consumer-{g}-0"),
                format!("data-consumer-{g}-1")
            ]
        );
        assert_eq!(
            names.get("Pod").cloned().unwrap_or_default(),
            [
                format!("consumer-{g}-0"),
                format!("consumer-{g}-1"),
                format!("data-producer-{g}")
            ]
        );
    }
}

/// Suite 6: someone takes a field with `kubectl apply --server-side --force-conflicts`; the
/// real server's conflict comes out as one line naming the manager, then `--force-conflicts`
/// takes it back and the next run is a no-op.
#[test]
fn field_manager_conflict_then_force_conflicts() {
    let Some(r) = Rollout::new("conflict") else {
        return;
    };
    r.settle(D1);
    let sts = format!("consumer-{G1}");
    let scale = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": sts, "namespace": r.c.ns}, "spec": {"replicas": 3}});
    // Without --force-conflicts kubectl itself is refused: snaproll owns spec.replicas.
    let mut cmd = r.c.kubectl();
    cmd.args([
        "apply",
        "--server-side",
        "--field-manager=intruder",
        "-f",
        "-",
    ]);
    let out = pipe(cmd, &scale.to_string());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("conflict"),
        "{out:?}"
    );
    let mut cmd = r.c.kubectl();
    cmd.args([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=intruder",
        "-f",
        "-",
    ]);
    let out = pipe(cmd, &scale.to_string());
    assert!(out.status.success(), "{out:?}");

    let mark = r.c.audit_mark();
    let run = r.reconcile(D1, &[]);
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "StatefulSet/{sts} ({}): conflict with field manager \"intruder\"",
            r.c.ns
        )) && run.stderr.contains("--force-conflicts"),
        "{}",
        run.stderr
    );
    let writes: Vec<String> =
        r.c.audit_since(mark)
            .iter()
            .filter(|a| a.is_write() && a.resource() != "leases")
            .map(Audit::line)
            .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    assert_eq!(r.c.get("statefulset", &sts).unwrap()["spec"]["replicas"], 3);

    let run = r.reconcile(D1, &["--force-conflicts"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let live = r.c.get("statefulset", &sts).unwrap();
    assert_eq!(live["spec"]["replicas"], 2);
    let managers: Vec<&str> = live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(!managers.contains(&"intruder"), "{managers:?}");
    r.c.play(&r.size);
    r.settle(D1);
    r.quiet(D1);
}

/// Suite 7: changes the real server refuses (the StatefulSet's claim templates, the source
/// claim's size, the snapshot source's CEL rule) come out as snaproll's one-line messages,
/// caught by the dry-run: nothing is written.
#[test]
fn immutable_and_invalid_changes_are_one_line_errors() {
    let Some(mut r) = Rollout::new("immutable") else {
        return;
    };
    r.settle(D1);
    let before = r.c.get("statefulset", &format!("consumer-{G1}")).unwrap();

    // A bigger claim in place: the StatefulSet's volumeClaimTemplates and the unbound source
    // claim's size are both refused.
    r.size = "2Gi".into();
    r.write_spec();
    let mark = r.c.audit_mark();
    let out = r.snaproll(&["apply", "--generation", G1]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("size change: {stderr}");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "PersistentVolumeClaim/data ({}): cannot change immutable field spec.resources.requests.storage; roll a new generation",
            r.c.ns
        )),
        "{stderr}"
    );
    // The server's own message is kept, the dump of the object it appends is not.
    assert!(
        stderr.contains("spec is immutable after creation"),
        "{stderr}"
    );
    assert!(!stderr.contains("@@"), "{stderr}");
    let writes: Vec<String> =
        r.c.audit_since(mark)
            .iter()
            .filter(|a| a.is_write() && a.resource() != "leases")
            .map(Audit::line)
            .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    let after = r.c.get("statefulset", &format!("consumer-{G1}")).unwrap();
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["spec"], before["spec"]);

    // The StatefulSet's claim templates alone changed in place (a template edited): the
    // server's generic "updates to statefulset spec for fields other than" answer, with the
    // field named by snaproll.
    r.size = "1Gi".into();
    r.write_spec();
    let templates = r.c.tmp.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let sts = std::fs::read_to_string(repo_path("templates/statefulset.yaml.j2")).unwrap();
    std::fs::write(
        templates.join("statefulset.yaml.j2"),
        sts.replace("volumeMode: {{ storage.volumeMode }}", "volumeMode: Block"),
    )
    .unwrap();
    let dir = templates.display().to_string();
    let mark = r.c.audit_mark();
    let out = r
        .snaproll(&["apply", "--generation", G1, "--templates", &dir])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("StatefulSet claim template change: {stderr}");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "StatefulSet/consumer-{G1} ({}): cannot change immutable field spec.volumeClaimTemplates[0].spec.volumeMode; roll a new generation",
            r.c.ns
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("updates to statefulset spec for fields other than"),
        "{stderr}"
    );
    let writes: Vec<String> =
        r.c.audit_since(mark)
            .iter()
            .filter(|a| a.is_write() && a.resource() != "leases")
            .map(Audit::line)
            .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    std::fs::remove_file(templates.join("statefulset.yaml.j2")).unwrap();

    // The snapshot source changed in place (a template edited): the CRD's CEL rule refuses it.
    let snap = std::fs::read_to_string(repo_path("templates/volumesnapshot.yaml.j2")).unwrap();
    std::fs::write(
        templates.join("volumesnapshot.yaml.j2"),
        snap.replace("{{ names.pvc }}", "data-copy"),
    )
    .unwrap();
    let mark = r.c.audit_mark();
    let templates = templates.display().to_string();
    let out = r
        .snaproll(&["apply", "--generation", G1, "--templates", &templates])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("snapshot source change: {stderr}");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "VolumeSnapshot/data-{G1} ({}): cannot change immutable field spec.source.persistentVolumeClaimName",
            r.c.ns
        )),
        "{stderr}"
    );
    let writes: Vec<String> =
        r.c.audit_since(mark)
            .iter()
            .filter(|a| a.is_write() && a.resource() != "leases")
            .map(Audit::line)
            .collect();
    assert!(writes.is_empty(), "{writes:#?}");
}
