//! Render benchmark: 1,000 and 10,000 generated datasets rendered into a directory.
//!
//! Run with `cargo bench --bench render`. Targets (issue 2): 1,000 datasets in under 250 ms wall
//! and under 100 MB peak memory on a 2-core machine, cost linear in datasets. It measures the
//! library in-process (parse + validate + render + validate objects) and the release binary end
//! to end (`snaproll render --out DIR`), whose peak RSS comes from `getrusage(RUSAGE_CHILDREN)`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use snaproll::render::{Plan, Renderer};

/// A spec with `n` datasets, each with its own dataset and consumer names.
fn synthetic_spec(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata:\n  name: bench\n  namespace: bench\nspec:\n  snapshotClass:\n    name: bench-class\n    driver: pd.csi.storage.gke.io\n  datasets:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "    - name: data-{i}\n      storage: {{storageClassName: standard-rwo, size: 10Gi}}\n      producer:\n        image: ubuntu:22.04\n        command: [\"/bin/sh\", \"-c\"]\n        args: [\"echo {i} > /data/file.txt\"]\n      consumer:\n        name: consumer-{i}\n        replicas: 3\n        image: ubuntu:22.04\n        ports: [{{name: http, containerPort: 8080}}]\n        service: {{type: ClusterIP, ports: [{{name: http, port: 80, targetPort: http}}]}}\n"
        ));
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn in_process(text: &str, runs: usize) -> (Duration, usize) {
    let mut times = Vec::new();
    let mut objects = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let loaded = snaproll::spec::parse_str("bench.yaml", text).expect("valid spec");
        let renderer = Renderer::new(None).unwrap();
        let set = renderer
            .render(
                &loaded.rollout,
                &Plan::single(&loaded.rollout, "2021-07-15"),
            )
            .unwrap();
        let files = set.files();
        objects = set.objects.len();
        std::hint::black_box(files);
        times.push(start.elapsed());
    }
    (median(times), objects)
}

fn peak_children_rss_kib() -> i64 {
    // SAFETY: getrusage only writes into the struct we pass.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    }
}

fn end_to_end(spec: &Path, out: &Path, runs: usize) -> Duration {
    let bin = env!("CARGO_BIN_EXE_snaproll");
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let status = Command::new(bin)
            .args(["render", "--generation", "2021-07-15", "-f"])
            .arg(spec)
            .arg("--out")
            .arg(out)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        times.push(start.elapsed());
        assert!(status.success());
    }
    median(times)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run a smoke size then.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[1_000, 10_000] } else { &[100] };
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "snaproll render benchmark ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:>9} {:>9} {:>14} {:>14} {:>12} {:>12}",
        "datasets", "objects", "in-process", "per dataset", "binary wall", "peak RSS"
    );
    let mut per_dataset = Vec::new();
    for &n in sizes {
        let text = synthetic_spec(n);
        let spec = tmp.path().join(format!("spec-{n}.yaml"));
        std::fs::write(&spec, &text).unwrap();
        let runs = if n >= 10_000 { 3 } else { 7 };
        let (t, objects) = in_process(&text, runs);
        let out = tmp.path().join(format!("out-{n}"));
        let wall = end_to_end(&spec, &out, runs);
        let rss_mib = peak_children_rss_kib() as f64 / 1024.0;
        let per = t.as_secs_f64() * 1e6 / n as f64;
        per_dataset.push(per);
        println!(
            "{n:>9} {objects:>9} {:>11.1} ms {:>11.1} µs {:>9.1} ms {:>8.1} MiB",
            t.as_secs_f64() * 1e3,
            per,
            wall.as_secs_f64() * 1e3,
            rss_mib
        );
    }
    if per_dataset.len() == 2 {
        println!(
            "linearity: cost per dataset at 10,000 is {:.2}x the cost at 1,000",
            per_dataset[1] / per_dataset[0]
        );
    }
}
