//! Unchanged data: a producer may write a digest of what it produced (e.g. `sha256:<hex>`) as
//! its termination message. A generation whose digest equals the serving generation's takes
//! no snapshot and rolls nothing (state `unchanged`). Digests are recorded on snapshots
//! (`snaproll.dev/digest`) so the serving one's is known after its producer is gone, and the
//! skipped generation on the serving snapshot (`snaproll.dev/unchanged`) so the schedule does
//! not start it again.

use serde_json::Value;

use super::{Decision, Observed};
use crate::manifest::{ANNOTATION_DIGEST, ANNOTATION_UNCHANGED};

/// Longest termination message taken as a digest: a digest is short; anything longer is a log
/// line or an error, not a digest.
const MAX_DIGEST: usize = 256;

/// The digest a Succeeded producer reported in its termination message, trimmed; `None` when
/// it wrote nothing usable (empty, longer than [`MAX_DIGEST`], or not printable ASCII).
pub(super) fn producer_digest(o: &Observed) -> Option<String> {
    let pod = o.producer.as_ref()?;
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Succeeded") {
        return None;
    }
    let message = pod
        .pointer("/status/containerStatuses/0/state/terminated/message")
        .and_then(Value::as_str)?
        .trim();
    let usable = !message.is_empty()
        && message.len() <= MAX_DIGEST
        && message.chars().all(|c| c.is_ascii_graphic());
    usable.then(|| message.to_string())
}

fn annotation(o: &Observed, key: &str) -> Option<String> {
    o.snapshot
        .as_ref()?
        .pointer("/metadata/annotations")?
        .get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The digest recorded on the generation's snapshot.
pub(super) fn snapshot_digest(o: &Observed) -> Option<String> {
    annotation(o, ANNOTATION_DIGEST)
}

/// The skipped generation recorded on the generation's snapshot.
pub(super) fn recorded_unchanged(o: &Observed) -> Option<String> {
    annotation(o, ANNOTATION_UNCHANGED)
}

/// Fills every rendered generation's digest and unchanged record from what exists, so that a
/// rendered snapshot keeps its annotations: the digest its snapshot records, else its
/// producer's; the unchanged record its snapshot holds, unless the decision set a newer one.
pub(super) fn record(decision: &mut Decision, observed: &[Observed]) {
    for plan in &mut decision.render {
        let Some(o) = observed.iter().find(|o| o.id == plan.id) else {
            continue;
        };
        if plan.digest.is_none() {
            plan.digest = snapshot_digest(o).or_else(|| producer_digest(o));
        }
        if plan.unchanged.is_none() {
            plan.unchanged = recorded_unchanged(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn with_message(phase: &str, message: &str) -> Observed {
        Observed {
            id: "2021-07-16".into(),
            producer: Some(
                json!({"status": {"phase": phase, "containerStatuses": [
                {"state": {"terminated": {"exitCode": 0, "message": message}}}]}})
                .into(),
            ),
            ..Observed::default()
        }
    }

    #[test]
    fn a_digest_is_a_short_printable_termination_message_of_a_succeeded_producer() {
        let ok = with_message("Succeeded", " sha256:abc\n");
        assert_eq!(producer_digest(&ok).as_deref(), Some("sha256:abc"));
        assert_eq!(producer_digest(&with_message("Succeeded", "  \n")), None);
        assert_eq!(
            producer_digest(&with_message("Running", "sha256:abc")),
            None
        );
        assert_eq!(
            producer_digest(&with_message("Succeeded", &"a".repeat(257))),
            None
        );
        assert_eq!(
            producer_digest(&with_message("Succeeded", "done in 3 s")),
            None
        );
        assert_eq!(producer_digest(&Observed::default()), None);
    }
}
