//! An in-memory Kubernetes API for tests and the apply benchmark: kube-fake-client (server-side
//! apply, managedFields, conflicts, label selectors) behind a thin HTTP-level layer that adds
//! what the fake lacks and what the tests need:
//! - a log of every request (method, path, query) to count requests and writes;
//! - fault injection (any status code, or a delay to provoke client timeouts) by method,
//!   path and dry-run;
//! - server-side dry-run (`dryRun=All`), which the fake ignores: the patch is applied, its
//!   answer kept, and the previous state restored;
//! - cluster scope for VolumeSnapshotClass (the fake registers every CRD as namespaced);
//! - the API server's immutable-field validation for StatefulSet spec and VolumeSnapshot
//!   source, with the real messages;
//! - a loopback HTTP server (127.0.0.1:0) and a kubeconfig for end-to-end CLI tests.
//!
//! Shared by `tests/it` and `benches/apply.rs` (via `#[path]`).

#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

mod handler;
use handler::{Layer, handle, map_path, raw_call, status_response, strip_scope};

/// Marker types so the fake knows the snapshot CRDs.
macro_rules! crd {
    ($name:ident, $kind:literal, $plural:literal) => {
        #[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            metadata: ObjectMeta,
        }
        impl kube::Resource for $name {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;
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
crd!(VolumeSnapshot, "VolumeSnapshot", "volumesnapshots");
crd!(
    VolumeSnapshotClass,
    "VolumeSnapshotClass",
    "volumesnapshotclasses"
);

/// Where the fake keeps cluster-scoped VolumeSnapshotClasses.
const CLUSTER_NS: &str = "snaproll-test-cluster-scope";

/// One request as the API saw it.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The status code of the answer (0 while it is being handled).
    pub status: u16,
    /// A PATCH whose object did not exist before: server-side apply creating it (RBAC
    /// authorizes that as `create` too).
    pub creates: bool,
    /// When the request arrived (to measure the pauses between retries).
    pub at: std::time::Instant,
    /// The request's User-Agent header (empty when it had none).
    pub user_agent: String,
}

impl Req {
    pub fn is_dry_run(&self) -> bool {
        self.query.contains("dryRun=All")
    }
    /// A request that changes a stored object. Requests on Leases (a run's lock, see
    /// `snaproll::apply::lease`) are not counted: they are not changes to the rollout, and a
    /// no-op run must still make zero writes. [`Req::is_lease`] picks them out.
    pub fn is_write(&self) -> bool {
        self.method != "GET" && !self.is_dry_run() && !self.is_lease()
    }
    /// A request on a `coordination.k8s.io` Lease.
    pub fn is_lease(&self) -> bool {
        self.path.starts_with("/apis/coordination.k8s.io/")
    }
    pub fn is_list(&self) -> bool {
        self.method == "GET" && self.name().is_none() && !self.is_watch()
    }
    /// A watch (`?watch=true`): a streaming GET, answered with the changes as they happen.
    pub fn is_watch(&self) -> bool {
        self.query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
    }
    /// The resource plural (`statefulsets`).
    pub fn resource(&self) -> String {
        let parts: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        let start = if parts.first() == Some(&"api") { 2 } else { 3 };
        let rest = &parts[start.min(parts.len())..];
        if rest.first() == Some(&"namespaces") {
            rest.get(2).map(|s| s.to_string()).unwrap_or_default()
        } else {
            rest.first().map(|s| s.to_string()).unwrap_or_default()
        }
    }
    pub fn name(&self) -> Option<String> {
        let parts: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        let start = if parts.first() == Some(&"api") { 2 } else { 3 };
        let rest = &parts[start.min(parts.len())..];
        let idx = if rest.first() == Some(&"namespaces") {
            3
        } else {
            1
        };
        rest.get(idx).map(|s| s.to_string())
    }
}

/// What an injected fault does.
#[derive(Clone, Debug)]
pub enum FaultAction {
    /// Answer with this status code, reason and message instead of the fake.
    Status(u16, String, String),
    /// Like `Status`, asking the client to wait this many seconds, as the API server does:
    /// a `Retry-After` header and `details.retryAfterSeconds` in the Status.
    StatusRetryAfter(u16, String, String, u32),
    /// The API server's priority-and-fairness rejection: 429, `Retry-After: <secs>` and a
    /// plain-text body (no Status).
    Throttled(u32),
    /// Wait this long, then carry on (so the client's own timeout fires first).
    Delay(Duration),
    /// Answer 200 with this body (e.g. one that does not decode).
    Body(String),
    /// Fail the request with a reset connection (an I/O error; over the loopback server it
    /// becomes a 500, since the connection is hyper's).
    Reset,
}

/// A fault for requests matching `method` (any when `None`), a path containing `path`, and
/// (when set) dry-run or not; skips the first `skip` matches, then fires `times` times.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: Option<String>,
    pub path: String,
    pub dry_run: Option<bool>,
    /// Only watches (`Some(true)`), or never watches (`Some(false)`).
    pub watch: Option<bool>,
    pub skip: usize,
    pub times: usize,
    pub action: FaultAction,
}

impl Fault {
    pub fn status(method: &str, path: &str, code: u16, reason: &str, message: &str) -> Fault {
        Fault {
            method: Some(method.to_string()),
            path: path.to_string(),
            dry_run: None,
            watch: None,
            skip: 0,
            times: usize::MAX,
            action: FaultAction::Status(code, reason.to_string(), message.to_string()),
        }
    }
    pub fn delay(method: &str, path: &str, d: Duration) -> Fault {
        Fault {
            method: Some(method.to_string()),
            path: path.to_string(),
            dry_run: None,
            watch: None,
            skip: 0,
            times: usize::MAX,
            action: FaultAction::Delay(d),
        }
    }
    pub fn body(method: &str, path: &str, body: &str) -> Fault {
        Fault {
            method: Some(method.to_string()),
            path: path.to_string(),
            dry_run: None,
            watch: None,
            skip: 0,
            times: usize::MAX,
            action: FaultAction::Body(body.to_string()),
        }
    }
    pub fn reset(method: &str, path: &str) -> Fault {
        Fault {
            method: Some(method.to_string()),
            path: path.to_string(),
            dry_run: None,
            watch: None,
            skip: 0,
            times: usize::MAX,
            action: FaultAction::Reset,
        }
    }
    /// Adds a `Retry-After` of `secs` to a `Status` fault.
    pub fn retry_after(mut self, secs: u32) -> Fault {
        if let FaultAction::Status(code, reason, message) = self.action {
            self.action = FaultAction::StatusRetryAfter(code, reason, message, secs);
        }
        self
    }
    /// A throttled answer as the API server's priority-and-fairness filter sends it.
    pub fn throttled(method: &str, path: &str, secs: u32) -> Fault {
        Fault {
            method: Some(method.to_string()),
            path: path.to_string(),
            dry_run: None,
            watch: None,
            skip: 0,
            times: usize::MAX,
            action: FaultAction::Throttled(secs),
        }
    }
    pub fn times(mut self, n: usize) -> Fault {
        self.times = n;
        self
    }
    pub fn dry_run(mut self, d: bool) -> Fault {
        self.dry_run = Some(d);
        self
    }
    pub fn watch(mut self, w: bool) -> Fault {
        self.watch = Some(w);
        self
    }
    fn matches(&self, r: &Req) -> bool {
        self.method.as_deref().is_none_or(|m| m == r.method)
            && r.path.contains(&self.path)
            && self.dry_run.is_none_or(|d| d == r.is_dry_run())
            && self.watch.is_none_or(|w| w == r.is_watch())
    }
}

struct State {
    inner: kube::Client,
    log: Mutex<Vec<Req>>,
    faults: Mutex<VecDeque<Fault>>,
    /// Serialises dispatch so a dry-run's apply-and-restore is atomic.
    dispatch: tokio::sync::Mutex<()>,
}

/// The fake API: a `kube::Client` for in-process use, plus the request log and faults.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<State>,
    /// A client whose requests go through this layer (what the code under test uses).
    pub client: kube::Client,
}

impl FakeApi {
    /// An empty cluster knowing the core kinds, apps and the snapshot CRDs. Must be called
    /// inside a tokio runtime (the client lives on it).
    pub async fn new() -> FakeApi {
        let inner = kube_fake_client::ClientBuilder::new()
            .with_resource::<VolumeSnapshot>()
            .with_resource::<VolumeSnapshotClass>()
            .with_return_managed_fields()
            .build()
            .await
            .expect("fake client");
        let state = Arc::new(State {
            inner,
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            dispatch: tokio::sync::Mutex::new(()),
        });
        let client = kube::Client::new(Layer(state.clone()), "default");
        FakeApi { state, client }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Req> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.state.log.lock().unwrap().clear();
    }

    /// Requests that changed stored state.
    pub fn writes(&self) -> Vec<Req> {
        self.requests().into_iter().filter(Req::is_write).collect()
    }

    pub fn inject(&self, fault: Fault) {
        self.state.faults.lock().unwrap().push_back(fault);
    }

    pub fn clear_faults(&self) {
        self.state.faults.lock().unwrap().clear();
    }

    /// A raw client straight to the fake (no log, no faults), for arranging and checking.
    pub fn raw(&self) -> kube::Client {
        self.state.inner.clone()
    }

    /// A bodiless request straight to the fake (no log, no faults): status and body.
    async fn bypass(&self, method: &str, path: &str) -> (u16, Bytes) {
        let mapped = map_path(path).0;
        raw_call(&self.state.inner, method, &mapped, "", None, Bytes::new()).await
    }

    /// GET one object as JSON (`None` when absent), bypassing log and faults.
    pub async fn get(&self, path: &str) -> Option<Value> {
        let (code, body) = self.bypass("GET", path).await;
        (code == 200).then(|| {
            strip_scope(
                serde_json::from_slice(&body).unwrap_or(Value::Null),
                map_path(path).1,
            )
        })
    }

    /// Names of the stored objects of a collection path (`/api/v1/namespaces/default/pods`).
    pub async fn names(&self, path: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .items(path)
            .await
            .iter()
            .filter_map(|i| {
                i.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .collect();
        names.sort();
        names
    }

    /// The stored objects of a collection path, bypassing log and faults.
    pub async fn items(&self, path: &str) -> Vec<Value> {
        let (_, body) = self.bypass("GET", path).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        v["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|i| strip_scope(i, map_path(path).1))
            .collect()
    }

    /// Deletes an object, bypassing log and faults.
    pub async fn delete(&self, path: &str) {
        self.bypass("DELETE", path).await;
    }

    /// Server-side applies `obj` as field manager `manager` (arranging a test's cluster).
    pub async fn apply_as(&self, manager: &str, path: &str, obj: &Value, force: bool) {
        let q = format!(
            "fieldManager={manager}{}",
            if force { "&force=true" } else { "" }
        );
        let (code, body) = raw_call(
            &self.state.inner,
            "PATCH",
            &map_path(path).0,
            &q,
            Some("application/apply-patch+yaml"),
            Bytes::from(obj.to_string()),
        )
        .await;
        assert!(
            code < 300,
            "arranging {path}: {code} {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Merge-patches an object's status (what controllers do).
    pub async fn set_status(&self, path: &str, status: Value) {
        let (code, body) = raw_call(
            &self.state.inner,
            "PATCH",
            &format!("{}/status", map_path(path).0),
            "",
            Some("application/merge-patch+json"),
            Bytes::from(json!({ "status": status }).to_string()),
        )
        .await;
        assert!(
            code < 300,
            "status of {path}: {code} {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Starts a loopback HTTP server (127.0.0.1, ephemeral port) serving a new fake on its
    /// own thread and runtime; returns it once it listens.
    pub fn serve() -> Server {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let api = FakeApi::new().await;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                tx.send((addr, api.clone(), tokio::runtime::Handle::current()))
                    .expect("send");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let state = api.state.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(
                            move |req: Request<hyper::body::Incoming>| {
                                let state = state.clone();
                                async move {
                                    let (parts, body) = req.into_parts();
                                    let bytes = body
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    let req = Request::from_parts(parts, bytes);
                                    let resp = handle(state, req).await.unwrap_or_else(|e| {
                                        status_response(500, "InternalError", &e.to_string()).map(
                                            |b| b.map_err(|never| match never {}).boxed_unsync(),
                                        )
                                    });
                                    Ok::<_, Infallible>(resp)
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        let (addr, api, handle) = rx.recv().expect("server started");
        Server { addr, api, handle }
    }
}

/// A running loopback server.
pub struct Server {
    pub addr: SocketAddr,
    pub api: FakeApi,
    pub handle: tokio::runtime::Handle,
}

impl Server {
    /// Writes a kubeconfig pointing at the server (plain http, context `fake`) into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n    namespace: default\ncurrent-context: fake\nusers:\n- name: tester\n  user:\n    token: test-token\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Runs a future on the server's runtime (to arrange or inspect the fake).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }
}

/// The RBAC requests of a request log (a PATCH that creates is authorized as `create` too).
pub fn rbac_requests(log: &[Req]) -> Vec<snaproll::install::rbac::Request> {
    let mut out = Vec::new();
    for r in log {
        let uri = if r.query.is_empty() {
            r.path.clone()
        } else {
            format!("{}?{}", r.path, r.query)
        };
        let Some(req) = snaproll::install::rbac::Request::from_http(&r.method, &uri) else {
            continue;
        };
        if r.creates {
            out.push(req.as_create());
        }
        out.push(req);
    }
    out
}
