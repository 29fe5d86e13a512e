//! `--wait`'s wake-up: watches on the kinds whose status gates a step (the producer Pod, the
//! VolumeSnapshot, the StatefulSet, the verify Job), by the rollout's label, so the next step
//! starts as soon as one of them changes status instead of after a fixed pause.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use tokio::sync::Notify;

use crate::apply::api_resource;
use crate::manifest::{Kind, LABEL_ROLLOUT};

/// The kinds whose status decides whether the next step can move on.
const WATCHED: [Kind; 4] = [
    Kind::Pod,
    Kind::VolumeSnapshot,
    Kind::StatefulSet,
    Kind::Job,
];

/// How long to gather a burst of events (a StatefulSet's replicas, a Pod's conditions) into
/// one step after the first.
pub(super) const DEBOUNCE: Duration = Duration::from_millis(200);

/// The shortest pause before a watch that ended (or failed) is set up again; it doubles up to
/// the resync period while the watch keeps failing.
const MIN_RETRY: Duration = Duration::from_secs(1);

/// Why a pause ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wake {
    /// A watched object of the rollout changed status.
    Changed,
    /// The resync period passed.
    Resync,
}

/// The rollout's watches, one task per kind on the engine's runtime; stopped when dropped.
pub(super) struct Watches {
    changed: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watches {
    /// Starts watching the rollout's objects in `namespace`; `resync` bounds each watch.
    pub(super) fn start(
        runtime: &tokio::runtime::Runtime,
        client: &kube::Client,
        namespace: &str,
        rollout: &str,
        resync: Duration,
    ) -> Watches {
        let changed = Arc::new(Notify::new());
        let selector = format!("{LABEL_ROLLOUT}={rollout}");
        let tasks = WATCHED
            .iter()
            .map(|&kind| {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), namespace, &api_resource(kind));
                runtime.spawn(follow(kind, api, selector.clone(), changed.clone(), resync))
            })
            .collect();
        Watches { changed, tasks }
    }

    /// Waits until a watched object changed status since the last pause (then gathers the
    /// burst for [`DEBOUNCE`]) or `resync` passed, whichever comes first.
    pub(super) fn pause(&self, runtime: &tokio::runtime::Runtime, resync: Duration) -> Wake {
        runtime.block_on(async {
            tokio::select! {
                _ = self.changed.notified() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    Wake::Changed
                }
                _ = tokio::time::sleep(resync) => Wake::Resync,
            }
        })
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The status of an object (`null` when it has none yet).
fn status(o: &DynamicObject) -> Value {
    o.data.get("status").cloned().unwrap_or(Value::Null)
}

fn name(o: &DynamicObject) -> String {
    o.metadata.name.clone().unwrap_or_default()
}

/// Lists then watches one kind forever, notifying `changed` whenever an object's status
/// differs from the last one seen (a new object without status, e.g. one the step itself just
/// applied, is no change). A failed list or watch is retried after [`MIN_RETRY`], doubling up
/// to `resync`; a relist that finds other statuses than the last seen notifies too.
async fn follow(
    kind: Kind,
    api: Api<DynamicObject>,
    selector: String,
    changed: Arc<Notify>,
    resync: Duration,
) {
    let mut known: Option<HashMap<String, Value>> = None;
    let mut retry = MIN_RETRY;
    // The API server caps a watch's timeoutSeconds; a resync-long watch is re-established
    // at each end anyway.
    let timeout = resync.as_secs().clamp(1, 290) as u32;
    loop {
        let began = Instant::now();
        match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                let now: HashMap<String, Value> =
                    list.items.iter().map(|o| (name(o), status(o))).collect();
                if known.as_ref().is_some_and(|k| *k != now) {
                    tracing::debug!(kind = kind.as_str(), "status changed while not watching");
                    changed.notify_one();
                }
                let mut seen = now;
                let version = list.metadata.resource_version.unwrap_or_default();
                let params = WatchParams::default().labels(&selector).timeout(timeout);
                match api.watch(&params, &version).await {
                    Ok(stream) => {
                        let mut stream = std::pin::pin!(stream);
                        while let Some(event) = stream.next().await {
                            match event {
                                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                                    let s = status(&o);
                                    let before = seen.insert(name(&o), s.clone());
                                    if before.unwrap_or(Value::Null) != s {
                                        tracing::debug!(
                                            kind = kind.as_str(),
                                            name = name(&o),
                                            "status changed"
                                        );
                                        changed.notify_one();
                                    }
                                }
                                Ok(WatchEvent::Deleted(o)) => {
                                    if seen.remove(&name(&o)).is_some() {
                                        tracing::debug!(
                                            kind = kind.as_str(),
                                            name = name(&o),
                                            "deleted"
                                        );
                                        changed.notify_one();
                                    }
                                }
                                Ok(WatchEvent::Bookmark(_)) => {}
                                Ok(WatchEvent::Error(e)) => {
                                    // 410 Gone (too old a version) and the like: relist.
                                    tracing::debug!(kind = kind.as_str(), error = %e, "watch ended");
                                    break;
                                }
                                Err(e) => {
                                    tracing::debug!(kind = kind.as_str(), error = %e, "watch failed");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(kind = kind.as_str(), error = %e, "watch refused");
                    }
                }
                known = Some(seen);
            }
            Err(e) => {
                tracing::debug!(kind = kind.as_str(), error = %e, "list for the watch failed");
            }
        }
        let lasted = began.elapsed();
        if lasted < retry {
            tokio::time::sleep(retry - lasted).await;
            retry = (retry * 2).min(resync.max(MIN_RETRY));
        } else {
            retry = MIN_RETRY;
        }
    }
}
