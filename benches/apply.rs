//! Apply benchmark: 1,000 datasets (5,001 objects) against the in-memory fake API server.
//!
//! Runs a first apply, a no-op re-run and a one-dataset change, and prints per run the wall
//! time and the requests that reached the API (counted at the HTTP layer, retries included)
//! next to what `kubectl apply --server-side` sends: one PATCH per object on every run.
//!
//! `cargo bench --bench apply` (optionally `-- <datasets>`).

#[path = "../tests/it/fakeapi/mod.rs"]
mod fakeapi;

use std::time::{Duration, Instant};

use snaproll::apply::{ApplyOptions, Manager};
use snaproll::render::{Plan, RenderedSet, Renderer};

const GENERATION: &str = "2021-07-15";

fn spec(datasets: usize, changed: Option<usize>) -> String {
    let mut s = String::from(
        "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata:\n  name: bench\n  namespace: default\nspec:\n  snapshotClass:\n    name: csi-snapclass\n    driver: pd.csi.storage.gke.io\n    deletionPolicy: Delete\n  datasets:\n",
    );
    for i in 0..datasets {
        let replicas = if Some(i) == changed { 4 } else { 3 };
        s.push_str(&format!(
            "    - name: ds-{i:04}\n      storage:\n        storageClassName: standard-rwo\n        size: 10Gi\n        accessModes: [ReadWriteOnce]\n      producer:\n        image: ubuntu:22.04\n        command: [\"/bin/sh\", \"-c\"]\n        args: [\"echo hi > /data/file.txt\"]\n        mountPath: /data\n      consumer:\n        name: ds-{i:04}-consumer\n        replicas: {replicas}\n        image: ubuntu:22.04\n        mountPath: /data\n        service:\n          type: Headless\n"
        ));
    }
    s
}

fn render(datasets: usize, changed: Option<usize>) -> RenderedSet {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snaproll.yaml");
    std::fs::write(&path, spec(datasets, changed)).expect("write spec");
    let loaded = snaproll::spec::load(&path).expect("spec");
    Renderer::new(None)
        .expect("templates")
        .render(&loaded.rollout, &Plan::single(&loaded.rollout, GENERATION))
        .expect("render")
}

struct Row {
    run: &'static str,
    /// Resources that got a LIST (one entry per LIST request).
    listed: Vec<String>,
    millis: u128,
    requests: usize,
    lists: usize,
    gets: usize,
    dry_runs: usize,
    writes: usize,
    /// Requests on the rollout's Lease (the run's lock), apart from the object requests.
    lease: usize,
    kubectl: usize,
}

fn main() {
    let datasets: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let base = render(datasets, None);
    let changed = render(datasets, Some(datasets / 2));
    let objects = base.objects.len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rows = rt.block_on(async {
        let api = fakeapi::FakeApi::new().await;
        let mgr = Manager::new(api.client.clone(), "bench", "default");
        let opts = ApplyOptions {
            prune: true,
            ..ApplyOptions::default()
        };
        let mut rows = Vec::new();
        for (run, set) in [
            ("first apply", &base),
            ("no-op re-run", &base),
            ("one-dataset change", &changed),
        ] {
            api.clear_requests();
            let start = Instant::now();
            // As every push run does: hold the rollout's Lease while writing.
            let lease = mgr
                .acquire_lease(Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| panic!("{run}: {e}"));
            let cs = mgr.apply(set, &opts).await.unwrap_or_else(|f| {
                panic!("{run}: {}: {}", f, f.error);
            });
            lease
                .release()
                .await
                .unwrap_or_else(|e| panic!("{run}: {e}"));
            let millis = start.elapsed().as_millis();
            let reqs = api.requests();
            rows.push(Row {
                run,
                listed: reqs
                    .iter()
                    .filter(|r| r.is_list())
                    .map(|r| r.resource())
                    .collect(),
                millis,
                requests: reqs.len(),
                lists: reqs.iter().filter(|r| r.is_list()).count(),
                gets: reqs
                    .iter()
                    .filter(|r| r.method == "GET" && !r.is_list() && !r.is_lease())
                    .count(),
                dry_runs: reqs.iter().filter(|r| r.is_dry_run()).count(),
                writes: reqs.iter().filter(|r| r.is_write()).count(),
                lease: reqs.iter().filter(|r| r.is_lease()).count(),
                kubectl: objects,
            });
            eprintln!("{run}: {}", cs.to_text().lines().last().unwrap_or_default());
        }
        // Where a no-op's time goes: reading the live state (the fake's LIST serialisation
        // and kube's deserialisation) versus comparing.
        api.clear_requests();
        let start = Instant::now();
        let live = mgr.live(&Default::default()).await.expect("live");
        eprintln!(
            "reading the live state alone ({} objects, {} requests): {} ms",
            live.objects.len(),
            api.requests().len(),
            start.elapsed().as_millis()
        );
        rows
    });
    println!(
        "\napply benchmark: {datasets} datasets, {objects} objects, in-memory fake API server\n"
    );
    println!(
        "{:<20} {:>9} {:>9} {:>6} {:>5} {:>9} {:>7} {:>6} {:>26}",
        "run",
        "wall ms",
        "requests",
        "LISTs",
        "GETs",
        "dry-runs",
        "writes",
        "lease",
        "kubectl apply --server-side"
    );
    for r in &rows {
        println!(
            "{:<20} {:>9} {:>9} {:>6} {:>5} {:>9} {:>7} {:>6} {:>17} PATCHes",
            r.run, r.millis, r.requests, r.lists, r.gets, r.dry_runs, r.writes, r.lease, r.kubectl
        );
    }
    println!(
        "\nkubectl apply --server-side sends one PATCH (a write) per object on every run ({objects} here), changed or not."
    );
    // The target: a no-op makes one LIST per kind and no write. The documented extras are two
    // GETs by name: the ApplySet parent (the inventory) and the VolumeSnapshotClass (read by
    // name so RBAC can limit it to that name). The run's Lease is counted apart (`lease`): a
    // GET and a create or update to take it, an update to release it; it is the run's lock,
    // not a change to the rollout.
    let noop = &rows[1];
    let mut kinds = noop.listed.clone();
    kinds.sort();
    kinds.dedup();
    let pass = kinds.len() == noop.listed.len()
        && noop.writes == 0
        && noop.dry_runs == 0
        && noop.gets == 2
        && noop.lease == 3
        && noop.requests == noop.lists + noop.gets + noop.lease;
    println!(
        "{} no-op: one LIST per kind ({} LISTs of {} kinds: {}) and zero writes ({} writes, {} dry-runs); documented extras: {} GETs (ApplySet parent, VolumeSnapshotClass by name) and {} Lease requests (take: GET + update, release: update)",
        if pass { "PASS" } else { "MISS" },
        noop.lists,
        kinds.len(),
        kinds.join(", "),
        noop.writes,
        noop.dry_runs,
        noop.gets,
        noop.lease
    );
}
