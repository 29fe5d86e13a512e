//! Readiness of live objects, checked explicitly per kind: generic libraries (kstatus) call a
//! VolumeSnapshot ready as soon as it exists and a Failed Pod "current", which is wrong here.

use serde::Serialize;
use serde_json::Value;

use crate::manifest::Kind;

/// Where an object stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Readiness {
    Ready,
    /// Not ready yet; the reason says what it waits for (or the last error the controller
    /// reported, which it keeps retrying).
    Pending(String),
    /// Will not become ready on its own.
    Failed(String),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

fn i64_at(v: &Value, ptr: &str) -> Option<i64> {
    v.pointer(ptr).and_then(Value::as_i64)
}

/// Readiness of a live object of `kind`.
pub fn readiness(kind: Kind, live: &Value) -> Readiness {
    match kind {
        Kind::StatefulSet => statefulset(live),
        Kind::VolumeSnapshot => snapshot(live),
        Kind::Pod => pod(live),
        Kind::Job => job(live),
        // A PVC may stay Pending until a Pod uses it (WaitForFirstConsumer): never wait on it.
        Kind::PersistentVolumeClaim | Kind::Service | Kind::VolumeSnapshotClass => Readiness::Ready,
    }
}

fn statefulset(v: &Value) -> Readiness {
    let generation = i64_at(v, "/metadata/generation").unwrap_or(0);
    let observed = i64_at(v, "/status/observedGeneration").unwrap_or(0);
    if observed < generation {
        return Readiness::Pending(format!(
            "controller has observed generation {observed} of {generation}"
        ));
    }
    let want = i64_at(v, "/spec/replicas").unwrap_or(1);
    let ready = i64_at(v, "/status/readyReplicas").unwrap_or(0);
    if ready < want {
        return Readiness::Pending(format!("{ready}/{want} replicas ready"));
    }
    let on_delete = v
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete");
    // A status without updatedReplicas has not reported any updated Pod yet.
    let updated = i64_at(v, "/status/updatedReplicas").unwrap_or(0);
    let cur = v.pointer("/status/currentRevision").and_then(Value::as_str);
    let upd = v.pointer("/status/updateRevision").and_then(Value::as_str);
    let rolling = match (cur, upd) {
        (Some(c), Some(u)) if c != u => Some((c, u)),
        _ => None,
    };
    if on_delete && (updated < want || rolling.is_some()) {
        // The controller never replaces Pods under OnDelete: say who has to.
        let revision = rolling
            .map(|(c, u)| format!(", revision {c} to {u}"))
            .unwrap_or_default();
        return Readiness::Pending(format!(
            "updateStrategy OnDelete: {updated}/{want} replicas updated{revision}; the controller replaces a Pod only when it is deleted (kubectl delete pod)"
        ));
    }
    if updated < want {
        return Readiness::Pending(format!("{updated}/{want} replicas updated"));
    }
    if let Some((c, u)) = rolling {
        return Readiness::Pending(format!("revision {c} rolling to {u}"));
    }
    Readiness::Ready
}

fn snapshot(v: &Value) -> Readiness {
    if v.pointer("/status/readyToUse").and_then(Value::as_bool) == Some(true) {
        return Readiness::Ready;
    }
    match v.pointer("/status/error/message").and_then(Value::as_str) {
        Some(m) => Readiness::Pending(format!("not ready to use; last error (retrying): {m}")),
        None => Readiness::Pending("not ready to use".to_string()),
    }
}

/// A Job is ready once Complete and failed once Failed (or FailureTarget, which the controller
/// turns into Failed once its Pods are gone). The failure names the condition's reason and
/// message, and the Pod's termination message when the engine found one
/// (`/status/snaprollPodMessage`, set on the observed value only).
fn job(v: &Value) -> Readiness {
    let conditions = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let holds = |t: &str| {
        conditions.iter().find(|c| {
            c.get("type").and_then(Value::as_str) == Some(t)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    };
    if holds("Complete").is_some() {
        return Readiness::Ready;
    }
    if let Some(c) = holds("Failed").or_else(|| holds("FailureTarget")) {
        let text = |k: &str| c.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let mut why = match (text("reason"), text("message")) {
            (Some(r), Some(m)) => format!("{r}: {m}"),
            (Some(t), None) | (None, Some(t)) => t.to_string(),
            (None, None) => "Job failed".to_string(),
        };
        if let Some(m) = v
            .pointer(POD_MESSAGE)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            why = format!("{m} ({why})");
        }
        return Readiness::Failed(why);
    }
    match v.pointer("/status/active").and_then(Value::as_i64) {
        Some(n) if n > 0 => Readiness::Pending("running".to_string()),
        _ => Readiness::Pending("not started".to_string()),
    }
}

/// Where the engine puts a failed Job's Pod termination message on the observed Job (never
/// applied: observed values are read only).
pub const POD_MESSAGE: &str = "/status/snaprollPodMessage";

fn pod(v: &Value) -> Readiness {
    match v.pointer("/status/phase").and_then(Value::as_str) {
        Some("Succeeded") => Readiness::Ready,
        Some("Failed") => Readiness::Failed(failure(v)),
        Some(p) => Readiness::Pending(format!("phase {p}")),
        None => Readiness::Pending("not scheduled".to_string()),
    }
}

/// Why a Pod failed: its message (e.g. a deadline), else its reason (e.g. Evicted), else the
/// first terminated container's reason and exit code (e.g. `OOMKilled, exit code 137`), which
/// is where the kubelet puts a producer's own failure.
fn failure(v: &Value) -> String {
    let text = |ptr: &str| {
        v.pointer(ptr)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match (text("/status/reason"), text("/status/message")) {
        // The kubelet's deadline: `DeadlineExceeded: Pod was active on the node longer…`.
        (Some(r), Some(m)) => return format!("{r}: {m}"),
        (Some(t), None) | (None, Some(t)) => return t.to_string(),
        (None, None) => {}
    }
    let terminated = v
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|c| c.pointer("/state/terminated"));
    match terminated {
        Some(t) => {
            let reason = t.get("reason").and_then(Value::as_str).unwrap_or("Error");
            match t.get("exitCode").and_then(Value::as_i64) {
                Some(code) => format!("{reason}, exit code {code}"),
                None => reason.to_string(),
            }
        }
        None => "pod failed".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshot_is_ready_only_when_ready_to_use() {
        assert!(!readiness(Kind::VolumeSnapshot, &json!({})).is_ready());
        let errored = json!({"status": {"readyToUse": false, "error": {"message": "quota"}}});
        assert!(
            matches!(readiness(Kind::VolumeSnapshot, &errored), Readiness::Pending(m) if m.contains("quota"))
        );
        assert!(
            readiness(
                Kind::VolumeSnapshot,
                &json!({"status": {"readyToUse": true}})
            )
            .is_ready()
        );
    }

    #[test]
    fn failed_pod_is_failed_not_current() {
        let p = json!({"status": {"phase": "Failed", "message": "OOMKilled"}});
        assert_eq!(
            readiness(Kind::Pod, &p),
            Readiness::Failed("OOMKilled".into())
        );
    }

    #[test]
    fn failed_pod_without_a_message_names_its_container_termination() {
        let p = json!({"status": {"phase": "Failed", "containerStatuses": [
            {"name": "producer", "state": {"terminated": {"reason": "Error", "exitCode": 3}}}]}});
        assert_eq!(
            readiness(Kind::Pod, &p),
            Readiness::Failed("Error, exit code 3".into())
        );
        let p = json!({"status": {"phase": "Failed", "reason": "Evicted"}});
        assert_eq!(
            readiness(Kind::Pod, &p),
            Readiness::Failed("Evicted".into())
        );
    }

    fn sts(status: Value, strategy: &str) -> Value {
        json!({"metadata": {"generation": 2},
               "spec": {"replicas": 3, "updateStrategy": {"type": strategy}},
               "status": status})
    }

    #[test]
    fn statefulset_without_updated_replicas_is_not_ready() {
        let s = sts(
            json!({"observedGeneration": 2, "readyReplicas": 3}),
            "RollingUpdate",
        );
        assert_eq!(
            readiness(Kind::StatefulSet, &s),
            Readiness::Pending("0/3 replicas updated".into())
        );
    }

    #[test]
    fn statefulset_observed_generation_lag_is_pending() {
        let s = sts(
            json!({"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 3,
                   "currentRevision": "a", "updateRevision": "a"}),
            "RollingUpdate",
        );
        assert_eq!(
            readiness(Kind::StatefulSet, &s),
            Readiness::Pending("controller has observed generation 1 of 2".into())
        );
    }

    #[test]
    fn statefulset_revision_mismatch_is_pending() {
        let s = sts(
            json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3,
                   "currentRevision": "sts-a", "updateRevision": "sts-b"}),
            "RollingUpdate",
        );
        assert_eq!(
            readiness(Kind::StatefulSet, &s),
            Readiness::Pending("revision sts-a rolling to sts-b".into())
        );
    }

    #[test]
    fn statefulset_on_delete_says_pods_must_be_deleted() {
        let s = sts(
            json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 1,
                   "currentRevision": "sts-a", "updateRevision": "sts-b"}),
            "OnDelete",
        );
        assert_eq!(
            readiness(Kind::StatefulSet, &s),
            Readiness::Pending("updateStrategy OnDelete: 1/3 replicas updated, revision sts-a to sts-b; the controller replaces a Pod only when it is deleted (kubectl delete pod)".into())
        );
        // Fully updated under OnDelete: ready.
        let s = sts(
            json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3,
                   "currentRevision": "sts-b", "updateRevision": "sts-b"}),
            "OnDelete",
        );
        assert!(readiness(Kind::StatefulSet, &s).is_ready());
    }

    #[test]
    fn statefulset_needs_observed_generation_and_ready_replicas() {
        let s = json!({"metadata": {"generation": 2}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 1, "readyReplicas": 3}});
        assert!(!readiness(Kind::StatefulSet, &s).is_ready());
        let s = json!({"metadata": {"generation": 2}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3,
                       "currentRevision": "a", "updateRevision": "a"}});
        assert!(readiness(Kind::StatefulSet, &s).is_ready());
    }
}
