//! The HTTP side of the fake: the tower service behind its client, and what each request is
//! answered with (faults, dry-run, cluster scope, immutable-field validation).

use super::*;

/// A response body: whole, or a stream of watch events.
pub(super) type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// How often a watch looks for changes in the store.
const WATCH_TICK: Duration = Duration::from_millis(50);

/// `?watch=true`, which kube-fake-client does not serve: the objects of the path (and its
/// label selector) are listed every [`WATCH_TICK`] and the differences streamed as watch
/// events, one JSON document per line, until `timeoutSeconds` or the client goes away. It
/// starts from the store as it is (a `resourceVersion` is ignored); statuses set through
/// [`FakeApi::set_status`] show up like any other change.
fn watch_response(state: Arc<State>, path: &str, query: &str) -> Response<Body> {
    let (mapped, cluster) = map_path(path);
    let mut timeout = Duration::from_secs(1800);
    let mut selectors = Vec::new();
    for p in query.split('&') {
        if p.starts_with("labelSelector=") || p.starts_with("fieldSelector=") {
            selectors.push(p);
        } else if let Some(secs) = p.strip_prefix("timeoutSeconds=") {
            timeout = Duration::from_secs(secs.parse().unwrap_or(1800));
        }
    }
    let list_query = selectors.join("&");
    let (mut tx, rx) =
        futures::channel::mpsc::channel::<Result<http_body::Frame<Bytes>, BoxError>>(64);
    tokio::spawn(async move {
        let snapshot = || async {
            // Under the dispatch lock: a dry-run's apply-and-restore is never seen.
            let _guard = state.dispatch.lock().await;
            let (_, body) = raw_call(
                &state.inner,
                "GET",
                &mapped,
                &list_query,
                None,
                Bytes::new(),
            )
            .await;
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let v = strip_scope(v, cluster);
            v["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|i| {
                    (
                        i.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        i,
                    )
                })
                .collect::<std::collections::BTreeMap<String, Value>>()
        };
        let mut prev = snapshot().await;
        let end = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < end {
            tokio::time::sleep(WATCH_TICK).await;
            let now = snapshot().await;
            let mut events = Vec::new();
            for (name, obj) in &now {
                match prev.get(name) {
                    None => events.push(json!({"type": "ADDED", "object": obj})),
                    Some(p) if p != obj => events.push(json!({"type": "MODIFIED", "object": obj})),
                    Some(_) => {}
                }
            }
            for (name, obj) in &prev {
                if !now.contains_key(name) {
                    events.push(json!({"type": "DELETED", "object": obj}));
                }
            }
            for e in events {
                let line = Bytes::from(format!("{e}\n"));
                if futures::SinkExt::send(&mut tx, Ok(http_body::Frame::data(line)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            prev = now;
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(rx).boxed_unsync())
        .expect("response")
}

/// The tower service behind [`FakeApi::client`].
#[derive(Clone)]
pub(super) struct Layer(pub(super) Arc<State>);

impl tower::Service<Request<kube::client::Body>> for Layer {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await?.to_bytes();
            handle(state, Request::from_parts(parts, bytes)).await
        })
    }
}

/// Rewrites a cluster-scoped VolumeSnapshotClass path into the fake's hidden namespace.
pub(super) fn map_path(path: &str) -> (String, bool) {
    const P: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";
    match path.strip_prefix(P) {
        Some(rest) => (
            format!(
                "/apis/snapshot.storage.k8s.io/v1/namespaces/{CLUSTER_NS}/volumesnapshotclasses{rest}"
            ),
            true,
        ),
        None => (path.to_string(), false),
    }
}

pub(super) fn strip_scope(mut v: Value, cluster: bool) -> Value {
    if cluster {
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("namespace");
        }
        if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
            for i in items {
                if let Some(m) = i.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("namespace");
                }
            }
        }
    }
    v
}

pub(super) fn status_response(code: u16, reason: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

fn json_response(code: u16, v: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("response")
}

pub(super) async fn raw_call(
    client: &kube::Client,
    method: &str,
    path: &str,
    query: &str,
    content_type: Option<&str>,
    body: Bytes,
) -> (u16, Bytes) {
    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    let req = b.body(kube::client::Body::from(body)).expect("request");
    match client.send(req).await {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (code, bytes)
        }
        Err(e) => (
            500,
            Bytes::from(json!({"message": e.to_string()}).to_string()),
        ),
    }
}

fn without_dry_run(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("dryRun="))
        .collect::<Vec<_>>()
        .join("&")
}

/// StatefulSet spec fields the API server lets an update change.
const STS_MUTABLE: [&str; 7] = [
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// Whether every value of `want` is present and equal in `have` (what an apply would keep).
fn subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| subset(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| subset(a, b))
        }
        (a, b) => a == b,
    }
}

/// The API server's validation of updates the fake does not know.
fn immutable_violation(
    resource: &str,
    name: &str,
    existing: &Value,
    patch: &Value,
) -> Option<Response<Full<Bytes>>> {
    match resource {
        "statefulsets" => {
            let (Some(Value::Object(want)), Some(have)) = (patch.get("spec"), existing.get("spec"))
            else {
                return None;
            };
            let changed = want.iter().any(|(k, v)| {
                !STS_MUTABLE.contains(&k.as_str()) && !have.get(k).is_some_and(|h| subset(v, h))
            });
            changed.then(|| {
                let cause = "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";
                json_response(
                    422,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                        "message": format!("StatefulSet.apps \"{name}\" is invalid: spec: {cause}"),
                        "details": {"name": name, "group": "apps", "kind": "StatefulSet",
                            "causes": [{"reason": "FieldValueForbidden", "message": cause, "field": "spec"}]}}),
                )
            })
        }
        "volumesnapshots" => {
            let want = patch.pointer("/spec/source")?;
            let have = existing.pointer("/spec/source")?;
            (want != have).then(|| {
                json_response(
                    422,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                        "message": format!("VolumeSnapshot.snapshot.storage.k8s.io \"{name}\" is invalid: spec.source: Invalid value: \"object\": source is immutable"),
                        "details": {"causes": [{"reason": "FieldValueInvalid", "message": "source is immutable", "field": "spec.source"}]}}),
                )
            })
        }
        _ => None,
    }
}

/// Logs the request, answers it, and records the answer's status in the log.
pub(super) async fn handle(
    state: Arc<State>,
    req: Request<Bytes>,
) -> Result<Response<Body>, BoxError> {
    let mut r = Req {
        method: req.method().as_str().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        status: 0,
        creates: false,
        at: std::time::Instant::now(),
        user_agent: req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    };
    if r.method == "PATCH" && !r.path.ends_with("/status") {
        let (code, _) = raw_call(
            &state.inner,
            "GET",
            &map_path(&r.path).0,
            "",
            None,
            Bytes::new(),
        )
        .await;
        r.creates = code == 404;
    }
    let index = {
        let mut log = state.log.lock().unwrap();
        log.push(r.clone());
        log.len() - 1
    };
    // A watch a fault applies to is answered (with the fault) as any other request.
    let faulted = {
        let faults = state.faults.lock().unwrap();
        faults.iter().any(|f| f.times > 0 && f.matches(&r))
    };
    let resp = if r.is_watch() && r.method == "GET" && !faulted {
        Ok(watch_response(state.clone(), &r.path, &r.query))
    } else {
        answer(state.clone(), r, req)
            .await
            .map(|resp| resp.map(|b| b.map_err(|never| match never {}).boxed_unsync()))
    };
    if let Ok(resp) = &resp
        && let Some(entry) = state.log.lock().unwrap().get_mut(index)
    {
        entry.status = resp.status().as_u16();
    }
    resp
}

async fn answer(
    state: Arc<State>,
    r: Req,
    req: Request<Bytes>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let method = r.method.clone();
    let path = r.path.clone();
    let query = r.query.clone();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req.into_body();

    // Faults first, as a real API server (or the network) would fail before doing anything.
    let action = {
        let mut faults = state.faults.lock().unwrap();
        let mut fired = None;
        for f in faults.iter_mut() {
            if f.times == 0 || !f.matches(&r) {
                continue;
            }
            if f.skip > 0 {
                f.skip -= 1;
                continue;
            }
            f.times -= 1;
            fired = Some(f.action.clone());
            break;
        }
        fired
    };
    match action {
        Some(FaultAction::Status(code, reason, message)) => {
            return Ok(status_response(code, &reason, &message));
        }
        Some(FaultAction::StatusRetryAfter(code, reason, message, secs)) => {
            let mut resp = json_response(
                code,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": message, "reason": reason, "code": code,
                        "details": {"retryAfterSeconds": secs}}),
            );
            resp.headers_mut().insert(
                "retry-after",
                http::HeaderValue::from_str(&secs.to_string()).expect("header"),
            );
            return Ok(resp);
        }
        Some(FaultAction::Throttled(secs)) => {
            return Ok(Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("content-type", "text/plain; charset=utf-8")
                .header("retry-after", secs.to_string())
                .body(Full::new(Bytes::from_static(
                    b"Too many requests, please try again later.\n",
                )))
                .expect("response"));
        }
        Some(FaultAction::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultAction::Body(b)) => {
            return Ok(Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(b)))
                .expect("response"));
        }
        Some(FaultAction::Reset) => {
            return Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            )));
        }
        None => {}
    }

    // Discovery-free clients need nothing more; answer the version probe for completeness.
    if path == "/version" {
        return Ok(json_response(
            200,
            &json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-fake"}),
        ));
    }

    let _guard = state.dispatch.lock().await;
    let (mapped, cluster) = map_path(&path);
    let dry_run = r.is_dry_run();
    let forward_query = without_dry_run(&query);

    if method == "PATCH" && !path.ends_with("/status") {
        let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (code, existing) = raw_call(&state.inner, "GET", &mapped, "", None, Bytes::new()).await;
        let existing: Option<Value> = (code == 200)
            .then(|| serde_json::from_slice(&existing).ok())
            .flatten();
        if let Some(ex) = &existing
            && let Some(resp) =
                immutable_violation(&r.resource(), &r.name().unwrap_or_default(), ex, &patch)
        {
            return Ok(resp);
        }
        let (code, resp) = raw_call(
            &state.inner,
            "PATCH",
            &mapped,
            &forward_query,
            content_type.as_deref(),
            body,
        )
        .await;
        if dry_run && code < 300 {
            // Undo: restore the previous object, or remove the one the patch created.
            match existing {
                Some(mut ex) => {
                    if let Some(m) = ex.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    raw_call(
                        &state.inner,
                        "PUT",
                        &mapped,
                        "",
                        Some("application/json"),
                        Bytes::from(ex.to_string()),
                    )
                    .await;
                }
                None => {
                    raw_call(
                        &state.inner,
                        "DELETE",
                        &mapped,
                        "propagationPolicy=Orphan",
                        None,
                        Bytes::new(),
                    )
                    .await;
                }
            }
        }
        let v: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
        return Ok(json_response(code, &strip_scope(v, cluster)));
    }
    if method == "DELETE" && dry_run {
        let (code, resp) = raw_call(&state.inner, "GET", &mapped, "", None, Bytes::new()).await;
        let v: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
        return Ok(json_response(code, &strip_scope(v, cluster)));
    }
    let (code, resp) = raw_call(
        &state.inner,
        &method,
        &mapped,
        &forward_query,
        content_type.as_deref(),
        body,
    )
    .await;
    let v: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
    Ok(json_response(code, &strip_scope(v, cluster)))
}
