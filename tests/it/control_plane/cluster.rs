//! One test's namespace on the shared control plane: kubectl, the audit log, and the kubelet and snapshot controller the harness plays.

use super::*;

impl Cluster {
    /// A fresh namespace `ns` (with its `default` ServiceAccount, which Pod admission needs and
    /// no controller here creates); `None` when the tier is skipped.
    pub fn new(ns: &str) -> Option<Cluster> {
        let plane = plane()?;
        let i = plane.next_user.fetch_add(1, Ordering::SeqCst);
        assert!(i < USERS, "more tests than identities in the token file");
        let tmp = tempfile::tempdir().unwrap();
        let kubeconfig = tmp.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            self::kubeconfig(&plane.url, &plane.ca, &format!("test-token-{i}"), ns),
        )
        .unwrap();
        let c = Cluster {
            plane,
            ns: ns.to_string(),
            user: format!("test-{i}"),
            kubeconfig,
            tmp,
        };
        c.apply_admin(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        c.apply_admin(&json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": ns}}));
        Some(c)
    }

    /// `kubectl` as the harness's admin, in this namespace.
    pub fn kubectl(&self) -> Command {
        let mut cmd = self.plane.kubectl();
        cmd.arg(format!("--namespace={}", self.ns));
        cmd
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        run_ok(self.kubectl().args(args))
    }

    /// Server-side applies `obj` as the harness (field manager `harness`).
    pub fn apply_admin(&self, obj: &Value) {
        let mut cmd = self.kubectl();
        cmd.args([
            "apply",
            "--server-side",
            "--field-manager=harness",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(obj.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "apply {obj}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The items of `resource` in this namespace (kubectl fills in `kind`).
    pub fn items(&self, resource: &str) -> Vec<Value> {
        let text = self.kubectl_ok(&["get", resource, "-o", "json"]);
        let list: Value = serde_json::from_str(&text).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    pub fn get(&self, resource: &str, name: &str) -> Option<Value> {
        let out = self
            .kubectl()
            .args(["get", resource, name, "-o", "json", "--ignore-not-found"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Merges `status` into the status subresource of `resource/name` (the kubelet's or the
    /// snapshot controller's part).
    pub fn set_status(&self, resource: &str, name: &str, status: Value) {
        self.kubectl_ok(&[
            "patch",
            resource,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &json!({ "status": status }).to_string(),
        ]);
    }

    /// This test's audit events (by its identity), from the `from`-th on.
    pub fn audit_since(&self, from: usize) -> Vec<Audit> {
        self.plane
            .audit(&self.user)
            .into_iter()
            .skip(from)
            .collect()
    }

    /// How many audit events of this test there are so far.
    pub fn audit_mark(&self) -> usize {
        self.audit_since(0).len()
    }

    /// The kubelet and the CSI snapshotter, once: producer Pods succeed, snapshots become ready
    /// with `restore_size`, and StatefulSet Pods run and become ready; then waits (up to 60s)
    /// for the StatefulSet controller to report every StatefulSet ready, pods created one by
    /// one (OrderedReady) readied as they come.
    pub fn play(&self, restore_size: &str) {
        for pod in self.items("pods") {
            let owned = pod["metadata"]["ownerReferences"].is_array();
            let phase = pod["status"]["phase"].as_str().unwrap_or_default();
            let name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !owned && !matches!(phase, "Succeeded" | "Failed") {
                self.set_status("pod", &name, json!({"phase": "Succeeded"}));
            }
        }
        for snap in self.items("volumesnapshots") {
            if snap["status"]["readyToUse"] != json!(true) {
                let name = snap["metadata"]["name"].as_str().unwrap_or_default();
                self.set_status(
                    "volumesnapshot",
                    name,
                    json!({"readyToUse": true, "restoreSize": restore_size,
                           "boundVolumeSnapshotContentName": format!("snapcontent-{name}")}),
                );
            }
        }
        let start = Instant::now();
        loop {
            let mut pending = false;
            for pod in self.items("pods") {
                if !pod["metadata"]["ownerReferences"].is_array()
                    || !pod["metadata"]["deletionTimestamp"].is_null()
                {
                    continue;
                }
                let ready = pod["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                if !ready {
                    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                    self.set_pod_ready(name);
                }
            }
            for sts in self.items("statefulsets") {
                if !sts["metadata"]["deletionTimestamp"].is_null() {
                    continue;
                }
                let want = sts["spec"]["replicas"].as_i64().unwrap_or(1);
                if sts["status"]["readyReplicas"].as_i64().unwrap_or(0) != want
                    || sts["status"]["observedGeneration"] != sts["metadata"]["generation"]
                {
                    pending = true;
                }
            }
            if !pending {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "StatefulSets not ready after 60s: {:#?}",
                self.items("statefulsets")
                    .iter()
                    .map(|s| (s["metadata"]["name"].clone(), s["status"].clone()))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A Pod Running and Ready, as the kubelet reports it.
    pub fn set_pod_ready(&self, name: &str) {
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        self.set_status(
            "pod",
            name,
            json!({"phase": "Running", "startTime": now, "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now}]}),
        );
    }

    /// Every object of the rollout's kinds, `kind` filled in, for `engine::observe`.
    pub fn rollout_objects(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for r in [
            "pods",
            "persistentvolumeclaims",
            "volumesnapshots",
            "services",
            "statefulsets",
            "jobs",
        ] {
            out.extend(self.items(r));
        }
        out
    }

    /// Object names per kind, sorted: `Kind/name`.
    pub fn names(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in self.rollout_objects() {
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            out.entry(kind).or_default().push(
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        out
    }
}
