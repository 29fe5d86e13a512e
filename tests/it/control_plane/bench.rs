//! The benchmark against the real server (ignored by default).

use super::*;

// ---------------------------------------------------------------------------------------------
// Benchmark (ignored by default): 1,000 datasets against the real server, snaproll next to
// `kubectl apply --server-side --prune --applyset` of the same rendered folder.
//
//   cargo test --release --test it control_plane::bench -- --ignored --nocapture
//   (SNAPROLL_BENCH_DATASETS=N for another size)

/// A spec of `n` datasets in `ns` using an existing class (no cluster-scoped object: kubectl
/// refuses those in a namespaced ApplySet), consumers at 0 replicas (the StatefulSet controller
/// stays idle) except `changed`, at 1.
fn bench_spec(ns: &str, n: usize, changed: Option<usize>) -> String {
    let mut s = format!(
        "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata:\n  name: bench\n  namespace: {ns}\nspec:\n  snapshotClass:\n    name: bench-class\n    existing: true\n  datasets:\n"
    );
    for i in 0..n {
        let replicas = usize::from(Some(i) == changed);
        s.push_str(&format!(
            "    - name: ds-{i:04}\n      storage:\n        storageClassName: standard-rwo\n        size: 1Gi\n        accessModes: [ReadWriteOnce]\n      producer:\n        image: ubuntu:22.04\n        command: [\"/bin/sh\", \"-c\"]\n        args: [\"echo hi > /data/file.txt\"]\n        mountPath: /data\n      consumer:\n        name: ds-{i:04}-consumer\n        replicas: {replicas}\n        image: ubuntu:22.04\n        mountPath: /data\n        service:\n          type: Headless\n"
        ));
    }
    s
}

struct BenchRow {
    tool: &'static str,
    run: &'static str,
    secs: f64,
    requests: usize,
    writes: usize,
}

#[test]
#[ignore = "benchmark: 1,000 datasets against the real server, minutes; run with --ignored"]
fn bench_apply_against_the_real_server() {
    let n: usize = std::env::var("SNAPROLL_BENCH_DATASETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let Some(snap) = Cluster::new("bench-snaproll") else {
        return;
    };
    let Some(kube) = Cluster::new("bench-kubectl") else {
        return;
    };
    let mut rows = Vec::new();
    let mut measure = |c: &Cluster, tool: &'static str, run: &'static str, f: &dyn Fn()| {
        let mark = c.audit_mark();
        let start = Instant::now();
        f();
        let secs = start.elapsed().as_secs_f64();
        let reqs = c.audit_since(mark);
        rows.push(BenchRow {
            tool,
            run,
            secs,
            requests: reqs.len(),
            writes: reqs.iter().filter(|a| a.is_write()).count(),
        });
    };

    let spec = snap.tmp.path().join("snaproll.yaml");
    let snaproll_apply = || {
        let out = snaproll()
            .args(["apply", "--prune", "--generation", G1, "-f"])
            .arg(&spec)
            .arg("--kubeconfig")
            .arg(&snap.kubeconfig)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    std::fs::write(&spec, bench_spec(&snap.ns, n, None)).unwrap();
    measure(&snap, "snaproll", "first apply", &snaproll_apply);
    measure(&snap, "snaproll", "no-op", &snaproll_apply);
    std::fs::write(&spec, bench_spec(&snap.ns, n, Some(0))).unwrap();
    measure(&snap, "snaproll", "one dataset changed", &snaproll_apply);

    // kubectl: the same folder rendered for its namespace, without the membership label
    // (kubectl sets it), pruned by its own ApplySet.
    let kspec = kube.tmp.path().join("snaproll.yaml");
    let folder = kube.tmp.path().join("folder.json");
    let render = |changed: Option<usize>| {
        std::fs::write(&kspec, bench_spec(&kube.ns, n, changed)).unwrap();
        let dir = kube.tmp.path().join("render");
        let out = snaproll()
            .args(["render", "--generation", G1, "-f"])
            .arg(&kspec)
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // The files directly (one object each, in apply order by name): `kubectl kustomize`
        // takes minutes over 4,000 files.
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.ends_with("kustomization.yaml"))
            .collect();
        files.sort();
        let mut items = Vec::new();
        for file in files {
            let mut v: Value =
                serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            if let Some(labels) = v["metadata"]["labels"].as_object_mut() {
                labels.remove("applyset.kubernetes.io/part-of");
            }
            items.push(v);
        }
        std::fs::write(
            &folder,
            json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string(),
        )
        .unwrap();
    };
    let kubectl_apply = || {
        let out = Command::new(kube.plane.kubectl_path())
            .arg(format!("--kubeconfig={}", kube.kubeconfig.display()))
            .arg(format!("--namespace={}", kube.ns))
            .env("KUBECTL_APPLYSET", "true")
            .args([
                "apply",
                "--server-side",
                "--prune",
                "--applyset=configmaps/kubectl-bench",
                "-f",
            ])
            .arg(&folder)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    render(None);
    measure(&kube, "kubectl", "first apply", &kubectl_apply);
    measure(&kube, "kubectl", "no-op", &kubectl_apply);
    render(Some(0));
    measure(&kube, "kubectl", "one dataset changed", &kubectl_apply);

    println!(
        "\n{n} datasets against kube-apiserver v1.34.4 (requests and writes from its audit log)\n"
    );
    println!("| tool | run | wall (s) | requests | writes |");
    println!("|---|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {} | {} |",
            r.tool, r.run, r.secs, r.requests, r.writes
        );
    }
}
