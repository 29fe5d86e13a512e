//! Render benchmark (issue 15): `snaproll render --out` of 1,000 and 10,000 generated datasets,
//! side by side with its peer and its floor, interleaved in one run:
//!
//! - **helm**: `helm template` of an equivalent chart (generated here: the same six objects per
//!   dataset with the same values, from a `values.yaml` holding the datasets), its output
//!   written to a file. Helm is found as `$HELM`, in `.ci/helm`'s cache, or on `PATH`; it is
//!   never built here (`.ci/helm` builds it). Without it, the helm column says so and is skipped.
//! - **bare**: a bare generator, this bench's own binary re-run as a child that writes the very
//!   bytes snaproll writes with `format!` and `std::fs::write` (no spec parsing, no templates,
//!   no validation): the floor. Checked byte for byte against snaproll's output on every size.
//!
//! Every tool is a child process writing into a memory filesystem (`/dev/shm` when there is
//! one); its peak RSS and CPU time (user + system) come from `wait4` for that child alone.
//! Medians of interleaved runs (the machine is shared, so only ratios within one run mean much;
//! CPU time is printed beside wall time because it suffers less from the other work). Targets: 1,000 datasets at least
//! 10× faster than helm, within 5× of the bare generator, at most 64 MiB peak; the cost per
//! dataset at 10,000 within 1.3× of that at 1,000. Run with `cargo bench --bench render`;
//! `cargo test --benches` runs it once at 100 datasets (CI's smoke run).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GENERATION: &str = "2021-07-15";

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

/// The equivalent Helm chart: the values of the spec (and the defaults snaproll fills in) in
/// `values.yaml`, one template per kind ranging over the datasets, written as a chart author
/// would (`toYaml`, `quote`).
fn write_chart(dir: &Path, n: usize) {
    let t = dir.join("templates");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(
        dir.join("Chart.yaml"),
        "apiVersion: v2\nname: bench\nversion: 0.1.0\n",
    )
    .unwrap();
    let mut values = format!(
        "generation: \"{GENERATION}\"\nrollout: {{name: bench, namespace: bench}}\napplyset: {}\nclass: {{name: bench-class, driver: pd.csi.storage.gke.io, deletionPolicy: Delete}}\n",
        snaproll::manifest::rollout_applyset_id("bench", "bench")
    );
    // What all datasets share is in `defaults` (as a chart author would write it, and as
    // snaproll's defaults are): a values.yaml of 10,000 full datasets is over Helm's 5 MiB limit.
    values.push_str("defaults:\n  storage: {storageClassName: standard-rwo, size: 10Gi, accessModes: [ReadWriteOnce], volumeMode: Filesystem}\n  producer: {image: \"ubuntu:22.04\", command: [\"/bin/sh\", \"-c\"], mountPath: /data, activeDeadlineSeconds: 43200}\n  consumer:\n    replicas: 3\n    image: \"ubuntu:22.04\"\n    mountPath: /data\n    ports: [{name: http, containerPort: 8080, protocol: TCP}]\n    pvcRetentionPolicy: {whenDeleted: Delete, whenScaled: Retain}\n    service: {ports: [{name: http, port: 80, protocol: TCP, targetPort: http}]}\n");
    values.push_str("datasets:\n");
    for i in 0..n {
        let _ = writeln!(
            values,
            "  - {{name: data-{i}, consumer: consumer-{i}, args: [\"echo {i} > /data/file.txt\"]}}"
        );
    }
    std::fs::write(dir.join("values.yaml"), values).unwrap();
    let labels = |component: &str, member: bool, generation: bool, indent: usize| {
        let pad = " ".repeat(indent);
        let mut s = format!(
            "{pad}app.kubernetes.io/component: {component}\n{pad}app.kubernetes.io/managed-by: snaproll\n"
        );
        if member {
            let _ = writeln!(
                s,
                "{pad}applyset.kubernetes.io/part-of: {{{{ $.Values.applyset }}}}"
            );
        }
        let _ = writeln!(s, "{pad}snaproll.dev/dataset: {{{{ .name }}}}");
        if generation {
            let _ = writeln!(
                s,
                "{pad}snaproll.dev/generation: {{{{ $.Values.generation | quote }}}}"
            );
        }
        let _ = write!(
            s,
            "{pad}snaproll.dev/rollout: {{{{ $.Values.rollout.name }}}}"
        );
        s
    };
    let files = [
        (
            "class.yaml",
            "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\nmetadata:\n  name: {{ .Values.class.name }}\n  labels:\n    app.kubernetes.io/component: snapshot-class\n    app.kubernetes.io/managed-by: snaproll\n    snaproll.dev/rollout: {{ .Values.rollout.name }}\n  annotations:\n    argocd.argoproj.io/sync-wave: \"0\"\ndriver: {{ .Values.class.driver }}\ndeletionPolicy: {{ .Values.class.deletionPolicy }}\n".to_string(),
        ),
        (
            "pvc.yaml",
            format!(
                "{{{{- range .Values.datasets }}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {{{{ .name }}}}\n  namespace: {{{{ $.Values.rollout.namespace }}}}\n  labels:\n{}\n  annotations:\n    argocd.argoproj.io/sync-wave: \"1\"\nspec:\n  accessModes:\n  {{{{- toYaml $.Values.defaults.storage.accessModes | nindent 2 }}}}\n  storageClassName: {{{{ $.Values.defaults.storage.storageClassName }}}}\n  volumeMode: {{{{ $.Values.defaults.storage.volumeMode }}}}\n  resources:\n    requests:\n      storage: {{{{ $.Values.defaults.storage.size }}}}\n{{{{- end }}}}\n",
                labels("source", true, false, 4)
            ),
        ),
        (
            "pod.yaml",
            format!(
                "{{{{- range .Values.datasets }}}}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {{{{ .name }}}}-producer-{{{{ $.Values.generation }}}}\n  namespace: {{{{ $.Values.rollout.namespace }}}}\n  labels:\n{}\n  annotations:\n    argocd.argoproj.io/sync-wave: \"1\"\nspec:\n  restartPolicy: OnFailure\n  activeDeadlineSeconds: {{{{ $.Values.defaults.producer.activeDeadlineSeconds }}}}\n  containers:\n  - name: producer\n    image: {{{{ $.Values.defaults.producer.image }}}}\n    {{{{- with $.Values.defaults.producer.command }}}}\n    command:\n    {{{{- toYaml . | nindent 4 }}}}\n    {{{{- end }}}}\n    {{{{- with .args }}}}\n    args:\n    {{{{- toYaml . | nindent 4 }}}}\n    {{{{- end }}}}\n    terminationMessagePath: /dev/termination-log\n    terminationMessagePolicy: File\n    volumeMounts:\n    - name: data\n      mountPath: {{{{ $.Values.defaults.producer.mountPath }}}}\n  volumes:\n  - name: data\n    persistentVolumeClaim:\n      claimName: {{{{ .name }}}}\n{{{{- end }}}}\n",
                labels("producer", true, true, 4)
            ),
        ),
        (
            "snapshot.yaml",
            format!(
                "{{{{- range .Values.datasets }}}}\n---\napiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata:\n  name: {{{{ .name }}}}-{{{{ $.Values.generation }}}}\n  namespace: {{{{ $.Values.rollout.namespace }}}}\n  labels:\n{}\n  annotations:\n    argocd.argoproj.io/sync-wave: \"2\"\nspec:\n  volumeSnapshotClassName: {{{{ $.Values.class.name }}}}\n  source:\n    persistentVolumeClaimName: {{{{ .name }}}}\n{{{{- end }}}}\n",
                labels("snapshot", true, true, 4)
            ),
        ),
        (
            "service.yaml",
            format!(
                "{{{{- range .Values.datasets }}}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{{{ .consumer }}}}\n  namespace: {{{{ $.Values.rollout.namespace }}}}\n  labels:\n{}\n  annotations:\n    argocd.argoproj.io/sync-wave: \"3\"\nspec:\n  type: ClusterIP\n  selector:\n    app.kubernetes.io/instance: {{{{ $.Values.rollout.name }}}}\n    app.kubernetes.io/name: {{{{ .consumer }}}}\n  ports:\n  {{{{- toYaml $.Values.defaults.consumer.service.ports | nindent 2 }}}}\n{{{{- end }}}}\n",
                labels("consumer", true, false, 4)
            ),
        ),
        (
            "statefulset.yaml",
            format!(
                "{{{{- range .Values.datasets }}}}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {{{{ .consumer }}}}-{{{{ $.Values.generation }}}}\n  namespace: {{{{ $.Values.rollout.namespace }}}}\n  labels:\n{}\n  annotations:\n    argocd.argoproj.io/sync-wave: \"4\"\nspec:\n  serviceName: {{{{ .consumer }}}}\n  replicas: {{{{ $.Values.defaults.consumer.replicas }}}}\n  selector:\n    matchLabels:\n      app.kubernetes.io/instance: {{{{ $.Values.rollout.name }}}}\n      app.kubernetes.io/name: {{{{ .consumer }}}}\n      snaproll.dev/generation: {{{{ $.Values.generation | quote }}}}\n  persistentVolumeClaimRetentionPolicy:\n    {{{{- toYaml $.Values.defaults.consumer.pvcRetentionPolicy | nindent 4 }}}}\n  template:\n    metadata:\n      labels:\n        app.kubernetes.io/instance: {{{{ $.Values.rollout.name }}}}\n        app.kubernetes.io/name: {{{{ .consumer }}}}\n        snaproll.dev/generation: {{{{ $.Values.generation | quote }}}}\n    spec:\n      containers:\n      - name: {{{{ .consumer }}}}\n        image: {{{{ $.Values.defaults.consumer.image }}}}\n        ports:\n        {{{{- toYaml $.Values.defaults.consumer.ports | nindent 8 }}}}\n        volumeMounts:\n        - name: {{{{ .name }}}}\n          mountPath: {{{{ $.Values.defaults.consumer.mountPath }}}}\n  volumeClaimTemplates:\n  - apiVersion: v1\n    kind: PersistentVolumeClaim\n    metadata:\n      name: {{{{ .name }}}}\n      labels:\n{}\n    spec:\n      accessModes:\n      {{{{- toYaml $.Values.defaults.storage.accessModes | nindent 6 }}}}\n      storageClassName: {{{{ $.Values.defaults.storage.storageClassName }}}}\n      volumeMode: {{{{ $.Values.defaults.storage.volumeMode }}}}\n      dataSource:\n        apiGroup: snapshot.storage.k8s.io\n        kind: VolumeSnapshot\n        name: {{{{ .name }}}}-{{{{ $.Values.generation }}}}\n      resources:\n        requests:\n          storage: {{{{ $.Values.defaults.storage.size }}}}\n{{{{- end }}}}\n",
                labels("consumer", true, true, 4),
                labels("consumer-volume", false, true, 8)
            ),
        ),
    ];
    for (name, text) in files {
        std::fs::write(t.join(name), text).unwrap();
    }
}

/// The bare generator: the files `snaproll render --out` writes for [`synthetic_spec`]`(n)`,
/// produced with `format!` alone, written into `out` (created fresh, as snaproll's `--out`).
fn bare_generate(n: usize, out: &Path) {
    let tmp = out.with_extension("bare-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let set = snaproll::manifest::rollout_applyset_id("bench", "bench");
    let g = GENERATION;
    let owned = |component: &str, d: &str, generation: bool| {
        let mut s = format!(
            "  labels:\n    app.kubernetes.io/component: {component}\n    app.kubernetes.io/managed-by: snaproll\n    applyset.kubernetes.io/part-of: {set}\n    snaproll.dev/dataset: {d}\n"
        );
        if generation {
            let _ = writeln!(s, "    snaproll.dev/generation: \"{g}\"");
        }
        s.push_str("    snaproll.dev/rollout: bench\n");
        s
    };
    let mut names = Vec::with_capacity(5 * n + 1);
    let mut write = |name: String, text: String| {
        std::fs::write(tmp.join(&name), text).unwrap();
        names.push(name);
    };
    write(
        "10-volumesnapshotclass-bench-class.yaml".to_string(),
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\nmetadata:\n  name: bench-class\n  labels:\n    app.kubernetes.io/component: snapshot-class\n    app.kubernetes.io/managed-by: snaproll\n    snaproll.dev/rollout: bench\n  annotations:\n    argocd.argoproj.io/sync-wave: \"0\"\ndriver: pd.csi.storage.gke.io\ndeletionPolicy: Delete\n".to_string(),
    );
    // In snaproll's file order: by kind, then by name.
    let mut ids: Vec<usize> = (0..n).collect();
    ids.sort_by_key(|i| format!("data-{i}"));
    for &i in &ids {
        let d = format!("data-{i}");
        write(
            format!("20-persistentvolumeclaim-{d}.yaml"),
            format!(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {d}\n  namespace: bench\n{}  annotations:\n    argocd.argoproj.io/sync-wave: \"1\"\nspec:\n  accessModes:\n  - ReadWriteOnce\n  storageClassName: standard-rwo\n  volumeMode: Filesystem\n  resources:\n    requests:\n      storage: 10Gi\n",
                owned("source", &d, false)
            ),
        );
    }
    for &i in &ids {
        let d = format!("data-{i}");
        write(
            format!("30-pod-{d}-producer-{g}.yaml"),
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {d}-producer-{g}\n  namespace: bench\n{}  annotations:\n    argocd.argoproj.io/sync-wave: \"1\"\nspec:\n  restartPolicy: OnFailure\n  activeDeadlineSeconds: 43200\n  containers:\n  - name: producer\n    image: ubuntu:22.04\n    command:\n    - /bin/sh\n    - \"-c\"\n    args:\n    - \"echo {i} > /data/file.txt\"\n    terminationMessagePath: /dev/termination-log\n    terminationMessagePolicy: File\n    volumeMounts:\n    - name: data\n      mountPath: /data\n  volumes:\n  - name: data\n    persistentVolumeClaim:\n      claimName: {d}\n",
                owned("producer", &d, true)
            ),
        );
    }
    for &i in &ids {
        let d = format!("data-{i}");
        write(
            format!("40-volumesnapshot-{d}-{g}.yaml"),
            format!(
                "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata:\n  name: {d}-{g}\n  namespace: bench\n{}  annotations:\n    argocd.argoproj.io/sync-wave: \"2\"\nspec:\n  volumeSnapshotClassName: bench-class\n  source:\n    persistentVolumeClaimName: {d}\n",
                owned("snapshot", &d, true)
            ),
        );
    }
    let mut consumers: Vec<usize> = (0..n).collect();
    consumers.sort_by_key(|i| format!("consumer-{i}"));
    for &i in &consumers {
        let c = format!("consumer-{i}");
        write(
            format!("50-service-{c}.yaml"),
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {c}\n  namespace: bench\n{}  annotations:\n    argocd.argoproj.io/sync-wave: \"3\"\nspec:\n  type: ClusterIP\n  selector:\n    app.kubernetes.io/instance: bench\n    app.kubernetes.io/name: {c}\n  ports:\n  - name: http\n    port: 80\n    protocol: TCP\n    targetPort: http\n",
                owned("consumer", &format!("data-{i}"), false)
            ),
        );
    }
    for &i in &consumers {
        let c = format!("consumer-{i}");
        let d = format!("data-{i}");
        write(
            format!("60-statefulset-{c}-{g}.yaml"),
            format!(
                "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {c}-{g}\n  namespace: bench\n{}  annotations:\n    argocd.argoproj.io/sync-wave: \"4\"\nspec:\n  serviceName: {c}\n  replicas: 3\n  selector:\n    matchLabels:\n      app.kubernetes.io/instance: bench\n      app.kubernetes.io/name: {c}\n      snaproll.dev/generation: \"{g}\"\n  persistentVolumeClaimRetentionPolicy:\n    whenDeleted: Delete\n    whenScaled: Retain\n  template:\n    metadata:\n      labels:\n        app.kubernetes.io/instance: bench\n        app.kubernetes.io/name: {c}\n        snaproll.dev/generation: \"{g}\"\n    spec:\n      containers:\n      - name: {c}\n        image: ubuntu:22.04\n        ports:\n        - containerPort: 8080\n          name: http\n          protocol: TCP\n        volumeMounts:\n        - name: {d}\n          mountPath: /data\n  volumeClaimTemplates:\n  - apiVersion: v1\n    kind: PersistentVolumeClaim\n    metadata:\n      name: {d}\n      labels:\n        app.kubernetes.io/component: consumer-volume\n        app.kubernetes.io/managed-by: snaproll\n        snaproll.dev/dataset: {d}\n        snaproll.dev/generation: \"{g}\"\n        snaproll.dev/rollout: bench\n    spec:\n      accessModes:\n      - ReadWriteOnce\n      storageClassName: standard-rwo\n      volumeMode: Filesystem\n      dataSource:\n        apiGroup: snapshot.storage.k8s.io\n        kind: VolumeSnapshot\n        name: {d}-{g}\n      resources:\n        requests:\n          storage: 10Gi\n",
                owned("consumer", &d, true)
            ),
        );
    }
    let mut k = String::from(
        "# Generated by snaproll: lists the rendered objects in apply order.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nsortOptions:\n  order: fifo\nresources:\n",
    );
    for name in &names {
        let _ = writeln!(k, "  - {name}");
    }
    std::fs::write(tmp.join("kustomization.yaml"), k).unwrap();
    std::fs::rename(&tmp, out).unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `cmd` to completion: its wall time and its own peak RSS in KiB (from `wait4`, so
/// neither this process nor earlier children count).
// The child is reaped by `wait4`, which std's `wait` cannot replace (it gives no rusage).
#[allow(clippy::zombie_processes)]
/// A child's wall time, peak RSS (KiB) and CPU time (user + system: less sensitive than wall
/// time to the other work on a shared machine).
fn timed(cmd: &mut Command) -> (Duration, i64, Duration) {
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn");
    let mut status = 0;
    // SAFETY: wait4 writes only into the status and rusage we pass; the child is ours and
    // not waited for elsewhere.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let pid = libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage);
        assert_eq!(pid, child.id() as libc::pid_t, "wait4");
        usage
    };
    let wall = start.elapsed();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed with status {status}"
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        wall,
        usage.ru_maxrss,
        tv(usage.ru_utime) + tv(usage.ru_stime),
    )
}

/// helm: `$HELM`, else what `.ci/helm --cached` prints (it builds nothing), else `helm` on PATH.
fn find_helm() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HELM").map(PathBuf::from) {
        return h.is_file().then_some(h);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/helm");
    if let Ok(out) = Command::new(&script)
        .arg("--cached")
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.is_file() {
            return Some(p);
        }
    }
    Command::new("helm")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        .then(|| PathBuf::from("helm"))
}

/// The documents of a YAML stream or directory as sorted JSON texts, to compare outputs.
fn documents(texts: impl Iterator<Item = String>) -> Vec<String> {
    let mut docs: Vec<String> = texts
        .flat_map(|t| {
            t.split("\n---")
                .map(|d| d.trim_start_matches("---").trim().to_string())
                .filter(|d| !d.lines().all(|l| l.starts_with('#') || l.trim().is_empty()))
                .collect::<Vec<_>>()
        })
        .map(|d| {
            let v: serde_json::Value = serde_saphyr::from_str(&d).expect("output is YAML");
            sorted(&v).to_string()
        })
        .collect();
    docs.sort();
    docs
}

/// `v` with every mapping's keys sorted (the documents' key order is the tools' own).
fn sorted(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            serde_json::Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn read_dir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

struct Row {
    n: usize,
    snaproll: Duration,
    snaproll_kib: i64,
    helm: Option<(Duration, i64)>,
    bare: Duration,
    bare_kib: i64,
    /// Median CPU times: snaproll, helm, bare.
    cpu: (Duration, Option<Duration>, Duration),
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The bare generator runs as a child of this same binary: `render-bench bare N DIR`.
    if args.get(1).map(String::as_str) == Some("bare") {
        bare_generate(args[2].parse().unwrap(), Path::new(&args[3]));
        return;
    }
    // `render-bench spec N` prints the bench's spec of N datasets, for profiling by hand.
    if args.get(1).map(String::as_str) == Some("spec") {
        print!("{}", synthetic_spec(args[2].parse().unwrap()));
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run a smoke size then.
    let full = args.iter().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[1_000, 10_000] } else { &[100] };
    let tmp = tempfile::tempdir().unwrap();
    // A memory filesystem separates the tools' cost from the disk's (when there is one).
    let shm = Path::new("/dev/shm");
    let mem = shm
        .is_dir()
        .then(|| tempfile::tempdir_in(shm).ok())
        .flatten()
        .unwrap_or_else(|| tempfile::tempdir().unwrap());
    let helm = find_helm();
    let helm_version = helm.as_ref().and_then(|h| {
        let out = Command::new(h).args(["version", "--short"]).output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    println!(
        "snaproll render benchmark ({} cores; output into {}; helm: {})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        mem.path().display(),
        match (&helm, &helm_version) {
            (Some(h), v) => format!("{} {}", h.display(), v.as_deref().unwrap_or("")),
            (None, _) =>
                "not available, column skipped (build it with .ci/helm, or set HELM)".to_string(),
        }
    );
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let mib = |k: i64| format!("{:.1} MiB", k as f64 / 1024.0);
    println!(
        "{:>9} {:>8} {:>12} {:>10} {:>12} {:>10} {:>12} {:>10} {:>9} {:>9}",
        "datasets",
        "objects",
        "snaproll",
        "peak RSS",
        "helm",
        "peak RSS",
        "bare",
        "peak RSS",
        "helm/snap",
        "snap/bare"
    );
    let bin = env!("CARGO_BIN_EXE_snaproll");
    let me = std::env::current_exe().unwrap();
    let mut rows = Vec::new();
    for &n in sizes {
        let spec = tmp.path().join(format!("spec-{n}.yaml"));
        std::fs::write(&spec, synthetic_spec(n)).unwrap();
        let chart = tmp.path().join(format!("chart-{n}"));
        write_chart(&chart, n);
        let out = mem.path().join("out");
        let bare_out = mem.path().join("bare");
        let helm_out = mem.path().join("helm.yaml");
        let mut snaproll_cmd = Command::new(bin);
        snaproll_cmd
            .args(["render", "--generation", GENERATION, "-f"])
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .stderr(Stdio::null());
        let mut bare_cmd = Command::new(&me);
        bare_cmd.arg("bare").arg(n.to_string()).arg(&bare_out);
        let helm_cmd = |h: &Path| {
            let mut c = Command::new(h);
            c.args(["template", "bench"])
                .arg(&chart)
                .stdout(std::fs::File::create(&helm_out).unwrap());
            c
        };
        let fresh = |dir: &Path| {
            let _ = std::fs::remove_dir_all(dir);
            let _ = std::fs::remove_file(dir);
        };
        // One untimed round: checks that the three produce the same objects (the bare
        // generator the same bytes), and warms the page cache.
        timed(&mut snaproll_cmd);
        fresh(&bare_out);
        timed(&mut bare_cmd);
        {
            let ours = read_dir_files(&out);
            let bare = read_dir_files(&bare_out);
            if let Some((a, b)) = ours.iter().zip(&bare).find(|(a, b)| a != b) {
                panic!(
                    "the bare generator (benches/render.rs) must write the bytes snaproll writes; update it with the templates.\nsnaproll {}:\n{}\nbare {}:\n{}",
                    a.0,
                    String::from_utf8_lossy(&a.1),
                    b.0,
                    String::from_utf8_lossy(&b.1)
                );
            }
            assert_eq!(
                ours.len(),
                bare.len(),
                "the bare generator writes every file"
            );
            if let Some(h) = &helm {
                timed(&mut helm_cmd(h));
                let theirs =
                    documents(std::iter::once(std::fs::read_to_string(&helm_out).unwrap()));
                let ours = documents(
                    ours.iter()
                        .filter(|(name, _)| name != "kustomization.yaml")
                        .map(|(_, b)| String::from_utf8(b.clone()).unwrap()),
                );
                assert_eq!(theirs.len(), 5 * n + 1, "helm renders every object");
                if let Some((a, b)) = theirs.iter().zip(&ours).find(|(a, b)| a != b) {
                    panic!(
                        "the chart (benches/render.rs) must render the objects snaproll renders; update it with the templates.\nhelm: {a}\nsnaproll: {b}"
                    );
                }
            }
        }
        // A child's peak RSS includes this process's resident memory at the spawn: hand the
        // output check's memory back first.
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe { libc::malloc_trim(0) };
        let runs = if !full {
            1
        } else if n >= 10_000 {
            3
        } else {
            7
        };
        let (mut s, mut h, mut b) = (Vec::new(), Vec::new(), Vec::new());
        let (mut s_cpu, mut h_cpu, mut b_cpu) = (Vec::new(), Vec::new(), Vec::new());
        let (mut s_kib, mut h_kib, mut b_kib) = (0, 0, 0);
        for _ in 0..runs {
            // Interleaved, each into an empty place, so load on the shared machine hits all three.
            fresh(&out);
            let (t, k, c) = timed(&mut snaproll_cmd);
            s.push(t);
            s_cpu.push(c);
            s_kib = s_kib.max(k);
            if let Some(hp) = &helm {
                fresh(&helm_out);
                let (t, k, c) = timed(&mut helm_cmd(hp));
                h.push(t);
                h_cpu.push(c);
                h_kib = h_kib.max(k);
            }
            fresh(&bare_out);
            let (t, k, c) = timed(&mut bare_cmd);
            b.push(t);
            b_cpu.push(c);
            b_kib = b_kib.max(k);
        }
        rows.push(Row {
            n,
            snaproll: median(s),
            snaproll_kib: s_kib,
            helm: (!h.is_empty()).then(|| (median(h), h_kib)),
            bare: median(b),
            bare_kib: b_kib,
            cpu: (
                median(s_cpu),
                (!h_cpu.is_empty()).then(|| median(h_cpu)),
                median(b_cpu),
            ),
        });
        let r = rows.last().unwrap();
        println!(
            "{:>9} {:>8} {:>12} {:>10} {:>12} {:>10} {:>12} {:>10} {:>9} {:>9}",
            r.n,
            5 * r.n + 1,
            ms(r.snaproll),
            mib(r.snaproll_kib),
            r.helm.map_or("-".to_string(), |(t, _)| ms(t)),
            r.helm.map_or("-".to_string(), |(_, k)| mib(k)),
            ms(r.bare),
            mib(r.bare_kib),
            r.helm.map_or("-".to_string(), |(t, _)| format!(
                "{:.1}x",
                t.as_secs_f64() / r.snaproll.as_secs_f64()
            )),
            format!("{:.1}x", r.snaproll.as_secs_f64() / r.bare.as_secs_f64()),
        );
        let (sc, hc, bc) = r.cpu;
        println!(
            "{:>9} {:>8} {:>12} {:>10} {:>12} {:>10} {:>12} {:>10} {:>9} {:>9}",
            "cpu",
            "",
            ms(sc),
            "",
            hc.map_or("-".to_string(), ms),
            "",
            ms(bc),
            "",
            hc.map_or("-".to_string(), |h| format!(
                "{:.1}x",
                h.as_secs_f64() / sc.as_secs_f64()
            )),
            format!("{:.1}x", sc.as_secs_f64() / bc.as_secs_f64()),
        );
    }
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    if let Some(r) = rows.iter().find(|r| r.n == 1_000) {
        match r.helm {
            Some((t, _)) => {
                let x = t.as_secs_f64() / r.snaproll.as_secs_f64();
                println!(
                    "{}: 1,000 datasets {x:.1}x faster than helm template (target at least 10x)",
                    verdict(x >= 10.0)
                );
            }
            None => println!("SKIP: helm not available, no comparison with helm template"),
        }
        if let (sc, Some(hc), _) = r.cpu {
            let x = hc.as_secs_f64() / sc.as_secs_f64();
            println!(
                "{}: 1,000 datasets {x:.1}x less CPU time than helm template (target at least 10x)",
                verdict(x >= 10.0)
            );
        }
        let x = r.snaproll.as_secs_f64() / r.bare.as_secs_f64();
        println!(
            "{}: 1,000 datasets {x:.1}x the bare generator's time (target at most 5x)",
            verdict(x <= 5.0)
        );
        let x = r.cpu.0.as_secs_f64() / r.cpu.2.as_secs_f64();
        println!(
            "{}: 1,000 datasets {x:.1}x the bare generator's CPU time (target at most 5x)",
            verdict(x <= 5.0)
        );
        let m = r.snaproll_kib as f64 / 1024.0;
        println!(
            "{}: 1,000 datasets peak RSS {m:.1} MiB (target at most 64 MiB)",
            verdict(m <= 64.0)
        );
    }
    if let [a, b] = &rows[..] {
        let per = |r: &Row| r.snaproll.as_secs_f64() / r.n as f64;
        let ratio = per(b) / per(a);
        println!(
            "{}: cost per dataset at {} is {ratio:.2}x the cost at {} (linear: under 1.3x)",
            verdict(ratio < 1.3),
            b.n,
            a.n
        );
    }
}
