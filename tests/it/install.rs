//! Running snaproll where users run it: `install` (CronJob, least-privilege RBAC), the RBAC
//! proof against a real engine run, JSON logs, and the kubectl plugin name.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use snaproll::apply::{ApplyOptions, Manager, PruneOptions};
use snaproll::install::{self, Options, rbac};
use snaproll::render::{Plan, Renderer};

use crate::common::*;

const GKE: &str = "examples/gke-daily/snaproll.yaml";
const REPO: &str = "https://git.example.com/ops.git";

fn docs(stdout: &[u8]) -> Vec<Value> {
    let text = String::from_utf8(stdout.to_vec()).unwrap();
    text.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect()
}

/// A copy of the GKE example with `from` replaced by `to`, in `dir`.
fn variant(dir: &Path, from: &str, to: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_path(GKE)).unwrap();
    assert!(text.contains(from), "{from:?} not in the example");
    let path = dir.join("snaproll.yaml");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

#[test]
fn install_renders_the_cronjob_and_its_rbac() {
    let out = snaproll()
        .args(["install", "-f", GKE, "--repo", REPO])
        .args(["--image", "ghcr.io/snaproll/snaproll:test"])
        .assert()
        .success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    insta::assert_snapshot!("install_gke", stdout);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("create secret generic snaproll-git --from-literal=token="),
        "{stderr}"
    );
    let objects = docs(stdout.as_bytes());
    assert_eq!(
        kinds(&objects),
        [
            "ServiceAccount",
            "ConfigMap",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
            "CronJob"
        ]
    );
    // The ConfigMap carries the spec byte for byte.
    assert_eq!(
        objects[1]["data"]["snaproll.yaml"].as_str().unwrap(),
        std::fs::read_to_string(repo_path(GKE)).unwrap()
    );
    let cron = &objects[6];
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        c["args"],
        json!([
            "reconcile",
            "-f",
            "/etc/snaproll/snaproll.yaml",
            "--repo",
            REPO,
            "--push",
            "--apply",
            "--prune"
        ])
    );
    let token = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SNAPROLL_GIT_TOKEN")
        .expect("token env");
    assert_eq!(
        token["valueFrom"]["secretKeyRef"],
        json!({"key": "token", "name": "snaproll-git"})
    );
    // No install object carries the ownership labels prune selects by.
    for o in &objects {
        assert!(
            o["metadata"]["labels"]
                .get("app.kubernetes.io/managed-by")
                .is_none(),
            "{o}"
        );
    }
}

#[test]
fn existing_class_gets_no_cluster_role_and_no_repo_means_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = variant(
        tmp.path(),
        "    deletionPolicy: Delete\n",
        "    existing: true\n",
    );
    let out = snaproll()
        .args(["install", "-f"])
        .arg(&spec)
        .args(["--namespace", "snaproll-system"])
        .assert()
        .success();
    let objects = docs(&out.get_output().stdout);
    assert_eq!(
        kinds(&objects),
        [
            "ServiceAccount",
            "ConfigMap",
            "Role",
            "RoleBinding",
            "CronJob"
        ]
    );
    // The Role lives where the rollout's objects are; the CronJob where the user asked.
    assert_eq!(objects[2]["metadata"]["namespace"], "default");
    assert_eq!(objects[3]["subjects"][0]["namespace"], "snaproll-system");
    assert_eq!(objects[4]["metadata"]["namespace"], "snaproll-system");
    let c = &objects[4]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["args"],
        json!(["apply", "-f", "/etc/snaproll/snaproll.yaml", "--prune"])
    );
    assert!(
        !c["env"].to_string().contains("SNAPROLL_GIT_TOKEN"),
        "no Git, no token"
    );
}

#[test]
fn ssh_remotes_mount_the_key_instead_of_a_token() {
    let out = snaproll()
        .args([
            "install",
            "-f",
            GKE,
            "--repo",
            "git@github.com:acme/ops.git",
        ])
        .args(["--git-secret", "ops-deploy-key"])
        .assert()
        .success();
    let objects = docs(&out.get_output().stdout);
    let pod = &objects[6]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].to_string();
    assert!(
        args.contains("\"--ssh-key\",\"/etc/snaproll-git/ssh-privatekey\""),
        "{args}"
    );
    let git = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "git")
        .expect("git volume");
    assert_eq!(git["secret"]["secretName"], "ops-deploy-key");
    assert_eq!(git["secret"]["defaultMode"], 0o400);
}

#[test]
fn pull_mode_only_commits_and_only_reads() {
    let out = snaproll()
        .args(["install", "-f", GKE, "--repo", REPO, "--pull"])
        .assert()
        .success();
    let objects = docs(&out.get_output().stdout);
    assert_eq!(
        kinds(&objects),
        [
            "ServiceAccount",
            "ConfigMap",
            "Role",
            "RoleBinding",
            "CronJob"
        ]
    );
    assert_eq!(
        objects[2]["rules"],
        json!([
            {"apiGroups": [""], "resources": ["persistentvolumeclaims", "pods", "services"], "verbs": ["list"]},
            {"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshots"], "verbs": ["list"]},
            {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["list"]},
        ])
    );
    let c = &objects[4]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["args"],
        json!([
            "reconcile",
            "-f",
            "/etc/snaproll/snaproll.yaml",
            "--repo",
            REPO,
            "--push"
        ])
    );
    // Pull mode without a repository has nothing to do.
    snaproll()
        .args(["install", "-f", GKE, "--pull"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--repo"));
}

#[test]
fn bad_flags_fail_with_one_line_and_print_nothing() {
    let out = snaproll()
        .args(["install", "-f", GKE, "--schedule", "every day"])
        .assert()
        .code(2);
    assert!(out.get_output().stdout.is_empty());
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: --schedule `every day`: a schedule has 5 fields"),
        "{stderr}"
    );

    let out = snaproll()
        .args(["install", "-f", GKE, "--apply"])
        .assert()
        .code(2);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("install --apply needs the apply engine"),
        "{stderr}"
    );
    assert!(out.get_output().stdout.is_empty());
}

#[test]
fn install_out_writes_one_file_per_object_in_apply_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("install");
    snaproll()
        .args(["install", "-f", GKE, "--repo", REPO, "--out"])
        .arg(&dir)
        .assert()
        .success();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "10-serviceaccount-snaproll-demo.yaml",
            "20-configmap-snaproll-demo-spec.yaml",
            "30-role-snaproll-demo.yaml",
            "40-rolebinding-snaproll-demo.yaml",
            "50-clusterrole-snaproll-default-demo.yaml",
            "60-clusterrolebinding-snaproll-default-demo.yaml",
            "70-cronjob-snaproll-demo.yaml"
        ]
    );
}

// --- The Role is sufficient and minimal, against a real engine run -----------------------------

/// One request as the API server saw it, and whether the object existed before it.
#[derive(Clone, Debug)]
struct Logged {
    method: String,
    uri: String,
    dry_run: bool,
    status: u16,
}

/// A `kube::Client` transport that records every request and forwards it to the fake.
///
/// kube-fake-client registers every custom resource as namespaced, so the cluster-scoped
/// VolumeSnapshotClass is served here instead, by a minimal in-memory stand-in (LIST by any
/// selector, server-side apply with and without dry-run, DELETE).
#[derive(Clone)]
struct Recorder {
    inner: kube::Client,
    log: Arc<Mutex<Vec<Logged>>>,
    classes: Arc<Mutex<std::collections::BTreeMap<String, Value>>>,
}

const CLASSES: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";

fn json_response(status: u16, body: &Value) -> http::Response<kube::client::Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

impl Recorder {
    async fn serve_class(
        &self,
        req: http::Request<kube::client::Body>,
    ) -> http::Response<kube::client::Body> {
        use http_body_util::BodyExt;
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let dry_run = req.uri().query().unwrap_or("").contains("dryRun=All");
        let name = path
            .strip_prefix(CLASSES)
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut classes = self.classes.lock().unwrap();
        match (method.as_str(), name.is_empty()) {
            ("GET", true) => json_response(
                200,
                &json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClassList",
                    "metadata": {"resourceVersion": "1"}, "items": classes.values().collect::<Vec<_>>()}),
            ),
            ("GET", false) => match classes.get(&name) {
                Some(obj) => json_response(200, obj),
                None => json_response(
                    404,
                    &json!({"kind": "Status", "apiVersion": "v1",
                    "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            },
            ("PATCH", false) => {
                let mut obj: Value = serde_json::from_slice(&body).unwrap();
                obj["metadata"]["uid"] = json!(format!("uid-{name}"));
                let status = if classes.contains_key(&name) {
                    200
                } else {
                    201
                };
                if !dry_run {
                    classes.insert(name, obj.clone());
                }
                json_response(status, &obj)
            }
            ("DELETE", false) => match classes.remove(&name) {
                Some(obj) => json_response(200, &obj),
                None => json_response(
                    404,
                    &json!({"kind": "Status", "apiVersion": "v1",
                    "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            },
            _ => json_response(
                405,
                &json!({"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "reason": "MethodNotAllowed", "code": 405, "message": "unsupported"}),
            ),
        }
    }
}

impl tower::Service<http::Request<kube::client::Body>> for Recorder {
    type Response = http::Response<kube::client::Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let this = self.clone();
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let dry_run = uri.contains("dryRun=All");
        Box::pin(async move {
            let resp = if req.uri().path().starts_with(CLASSES) {
                this.serve_class(req).await
            } else {
                this.inner.send(req).await?
            };
            this.log.lock().unwrap().push(Logged {
                method,
                uri,
                dry_run,
                status: resp.status().as_u16(),
            });
            Ok(resp)
        })
    }
}

macro_rules! snapshot_resource {
    ($ty:ident, $kind:literal, $plural:literal, $scope:ty) => {
        #[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
        struct $ty {
            metadata: ObjectMeta,
        }
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;
            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                "snapshot.storage.k8s.io".into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
snapshot_resource!(
    FakeVolumeSnapshot,
    "VolumeSnapshot",
    "volumesnapshots",
    k8s_openapi::NamespaceResourceScope
);

/// The RBAC requests of the log: PATCHes of objects that did not exist yet are authorized as
/// `create` as well (server-side apply creating an object, dry-run or not).
fn rbac_requests(log: &[Logged]) -> Vec<rbac::Request> {
    let mut existing: BTreeSet<(String, Option<String>, String)> = BTreeSet::new();
    let mut out = Vec::new();
    for l in log {
        let Some(req) = rbac::Request::from_http(&l.method, &l.uri) else {
            continue;
        };
        let key = (
            req.resource.clone(),
            req.namespace.clone(),
            req.name.clone().unwrap_or_default(),
        );
        let ok = (200..300).contains(&l.status);
        match req.verb.as_str() {
            "patch" => {
                if !existing.contains(&key) || l.status == 201 {
                    out.push(req.as_create());
                }
                if ok && !l.dry_run {
                    existing.insert(key);
                }
            }
            "delete" if ok => {
                existing.remove(&key);
            }
            _ => {}
        }
        out.push(req);
    }
    out
}

/// Marks a StatefulSet ready the way its controller would, through the unrecorded client.
async fn mark_ready(client: &kube::Client, name: &str) {
    let api: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(client.clone(), "default");
    let mut sts = api.get(name).await.unwrap();
    let generation = sts.metadata.generation.unwrap_or(1);
    sts.status = Some(k8s_openapi::api::apps::v1::StatefulSetStatus {
        observed_generation: Some(generation),
        replicas: 3,
        ready_replicas: Some(3),
        available_replicas: Some(3),
        updated_replicas: Some(3),
        current_replicas: Some(3),
        current_revision: Some("r1".into()),
        update_revision: Some("r1".into()),
        ..Default::default()
    });
    api.replace_status(name, &PostParams::default(), &sts)
        .await
        .unwrap();
}

/// A consumer PVC as the StatefulSet controller would create it from the claim template.
async fn controller_pvc(client: &kube::Client, name: &str, generation: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &snaproll::apply::api_resource(snaproll::manifest::Kind::PersistentVolumeClaim),
    );
    let pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default", "labels": {
            "app.kubernetes.io/managed-by": "snaproll", "snaproll.dev/rollout": "demo",
            "snaproll.dev/dataset": "data", "snaproll.dev/generation": generation,
            "app.kubernetes.io/component": "consumer-volume"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}
    });
    api.patch(
        name,
        &PatchParams::apply("kube-controller-manager"),
        &Patch::Apply(pvc),
    )
    .await
    .unwrap();
}

fn render(spec: &Path, generation: &str) -> snaproll::render::RenderedSet {
    let loaded = snaproll::spec::load(spec).unwrap();
    Renderer::new(None)
        .unwrap()
        .render(&loaded.rollout, &Plan::single(&loaded.rollout, generation))
        .unwrap()
}

/// The Role, RoleBinding and ClusterRole `install` renders for `spec`.
fn install_grants(spec: &Path) -> Vec<rbac::Grant> {
    let loaded = snaproll::spec::load(spec).unwrap();
    let text = std::fs::read_to_string(spec).unwrap();
    let objects = install::render(
        &loaded.rollout,
        &loaded.file,
        &text,
        &Options {
            schedule: "*/15 * * * *".into(),
            repo: None,
            git_secret: "snaproll-git".into(),
            image: install::default_image(),
            namespace: None,
            pull: false,
        },
    )
    .unwrap();
    install::grants(&objects)
}

/// The daily lifecycle on a fake API server: first apply, a no-change run, the next
/// generation, its readiness, retirement of the old one (StatefulSet, its volumes, producer,
/// snapshot) and a dataset leaving the spec (its Service and source PVC pruned).
async fn lifecycle(spec: &Path, two_datasets: &Path) -> Vec<Logged> {
    let inner = kube_fake_client::ClientBuilder::new()
        .with_resource::<FakeVolumeSnapshot>()
        .build()
        .await
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = kube::Client::new(
        Recorder {
            inner: inner.clone(),
            log: log.clone(),
            classes: Arc::default(),
        },
        "default",
    );
    let m = Manager::new(client, "demo", "default");
    let apply = ApplyOptions {
        prune: true,
        ..ApplyOptions::default()
    };
    // Day 1, with a second dataset that leaves the spec later.
    m.apply(&render(two_datasets, "2021-07-15"), &apply)
        .await
        .unwrap();
    mark_ready(&inner, "consumer-2021-07-15").await;
    controller_pvc(&inner, "data-consumer-2021-07-15-0", "2021-07-15").await;
    // A run that changes nothing.
    m.apply(&render(two_datasets, "2021-07-15"), &apply)
        .await
        .unwrap();
    // Day 2: the second dataset is gone from the spec; the new generation rolls out.
    let day2 = render(spec, "2021-07-16");
    m.apply(
        &day2,
        &ApplyOptions {
            prune: false,
            ..ApplyOptions::default()
        },
    )
    .await
    .unwrap();
    mark_ready(&inner, "consumer-2021-07-16").await;
    m.prune(&day2, &PruneOptions::default()).await.unwrap();
    m.delete_consumer_volumes("data", "2021-07-15")
        .await
        .unwrap();
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn role_is_sufficient_and_minimal_for_the_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let two = variant(
        tmp.path(),
        "  datasets:\n",
        "  datasets:\n    - name: extra\n      storage: {size: 1Gi}\n      producer: {image: busybox}\n      consumer: {name: extra, image: busybox, replicas: 1}\n",
    );
    let log = lifecycle(&repo_path(GKE), &two).await;
    let requests = rbac_requests(&log);
    let report = rbac::check(&install_grants(&repo_path(GKE)), &requests);
    let deletes: Vec<String> = requests
        .iter()
        .filter(|r| r.verb == "delete")
        .map(|r| r.to_string())
        .collect();
    assert!(
        report.is_exact(),
        "denied: {:#?}\nunused: {:#?}\ndeletes seen: {deletes:#?}",
        report.denied,
        report.unused
    );
}

/// With `snapshotClass.existing: true` the spec renders no class, so `install` renders no
/// ClusterRole, and the engine, which lists only the kinds it renders or the ApplySet records,
/// needs none.
#[tokio::test]
async fn existing_class_needs_no_cluster_access() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = variant(
        tmp.path(),
        "    deletionPolicy: Delete\n",
        "    existing: true\n",
    );
    let log = lifecycle(&spec, &spec).await;
    let report = rbac::check(&install_grants(&spec), &rbac_requests(&log));
    assert!(report.denied.is_empty(), "{:#?}", report.denied);
}

// --- Logs and the kubectl plugin -----------------------------------------------------------------

#[test]
fn json_logs_are_one_json_object_per_line() {
    let out = snaproll()
        .args([
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "validate",
            "-f",
            GKE,
        ])
        .args(["--generation", "2021-07-15"])
        .assert()
        .success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "debug logging produced nothing");
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    // In a cluster (KUBERNETES_SERVICE_HOST set) without a terminal, JSON is the default.
    let out = snaproll()
        .env("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        .args(["--log-level", "debug", "validate", "-f", GKE])
        .assert()
        .success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    let first = stderr.lines().next().expect("a debug line");
    assert!(serde_json::from_str::<Value>(first).is_ok(), "{first}");
    // Text on request, even off a terminal.
    let out = snaproll()
        .args([
            "--log-format",
            "text",
            "--log-level",
            "debug",
            "validate",
            "-f",
            GKE,
        ])
        .assert()
        .success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("DEBUG"), "{stderr}");
    assert!(serde_json::from_str::<Value>(stderr.lines().next().unwrap()).is_err());
}

#[test]
fn works_as_a_kubectl_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = tmp.path().join("kubectl-snaproll");
    std::fs::copy(assert_cmd::cargo::cargo_bin("snaproll"), &plugin).unwrap();
    let run = |args: &[&str]| {
        let mut cmd = assert_cmd::Command::new(&plugin);
        cmd.args(args).current_dir(root()).env("NO_COLOR", "1");
        cmd.env_remove("SNAPROLL_SPEC").env_remove("KUBECONFIG");
        cmd
    };
    let out = run(&["--help"]).assert().success();
    let help = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(help.contains("Usage: snaproll"), "{help}");
    assert!(!help.contains("kubectl-snaproll"), "{help}");
    run(&["validate", "-f", GKE, "--generation", "2021-07-15"])
        .assert()
        .success()
        .stdout(predicates::str::contains("valid (1 dataset"));
    // Errors name the command the way users typed it through kubectl.
    let out = run(&["no-such-command"]).assert().code(2);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("snaproll"), "{stderr}");
}
