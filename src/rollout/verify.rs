//! `consumer.verify`: a generation's verify Job runs after its snapshot is ready and before its
//! StatefulSet exists. Its outcome is recorded on the snapshot (`snaproll.dev/verify`) in the
//! apply that prunes the Job and its claim, so it survives them: `passed` lets the StatefulSet
//! be created (and a later pin of the generation needs no second check), `failed: <message>`
//! keeps the generation failed while the previous one keeps serving.

use super::readiness::{Readiness, readiness};
use super::{Decision, Observed, Options, created};
use crate::manifest::{ANNOTATION_VERIFY, Kind};
use crate::spec::Dataset;

/// Longest failure message recorded on the snapshot: an annotation is no log.
const MAX_MESSAGE: usize = 512;

/// Where a generation stands with its verification.
#[derive(Debug, PartialEq)]
pub(super) enum Verification {
    /// Passed (recorded, or the Job completed this run).
    Passed,
    /// Failed (recorded, or the Job failed or timed out this run): why.
    Failed(String),
    /// The Job runs or is to be created: what it waits for.
    Running(String),
}

/// The verify outcome recorded on the generation's snapshot.
fn recorded(o: &Observed) -> Option<String> {
    o.snapshot
        .as_ref()?
        .pointer("/metadata/annotations")?
        .get(ANNOTATION_VERIFY)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The outcome a finished (or timed-out) verify Job shows, as recorded: `passed` or
/// `failed: <message>`; `None` while it runs within its timeout, or when there is no Job.
fn finished(d: &Dataset, o: &Observed, opts: &Options) -> Option<String> {
    let job = o.verify.as_ref()?;
    let timeout = d.consumer.verify.as_ref()?.timeout();
    let outcome = match readiness(Kind::Job, job) {
        Readiness::Ready => "passed".to_string(),
        Readiness::Failed(why) => format!("failed: {why}"),
        Readiness::Pending(_) => {
            let waited = created(job).map(|t| opts.now.duration_since(t))?;
            if waited.as_secs() < timeout.as_secs() as i64 {
                return None;
            }
            format!(
                "failed: verify Job did not complete within {}",
                super::decide::human(timeout)
            )
        }
    };
    Some(truncate(outcome))
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Where the generation stands, for a dataset with `consumer.verify` whose snapshots are all
/// ready and which has no StatefulSet yet.
pub(super) fn verification(d: &Dataset, o: &Observed, opts: &Options) -> Verification {
    let outcome = recorded(o).or_else(|| finished(d, o, opts));
    match outcome.as_deref() {
        Some("passed") => Verification::Passed,
        Some(other) => Verification::Failed(format!(
            "verify failed: {}",
            other.strip_prefix("failed: ").unwrap_or(other)
        )),
        None => Verification::Running(match &o.verify {
            Some(job) => match readiness(Kind::Job, job) {
                Readiness::Pending(why) => format!("verify Job {why}"),
                _ => "verify Job finished".to_string(),
            },
            None => "snapshot ready; verify Job created".to_string(),
        }),
    }
}

/// Fills every rendered snapshot's verify record from what exists: the record it holds, else
/// the outcome its finished Job shows (recorded in the apply that prunes the Job).
pub(super) fn record(d: &Dataset, decision: &mut Decision, observed: &[Observed], opts: &Options) {
    for plan in decision.render.iter_mut().filter(|p| p.snapshot) {
        let Some(o) = observed.iter().find(|o| o.id == plan.id) else {
            continue;
        };
        if plan.verified.is_none() && !plan.verify {
            plan.verified = recorded(o).or_else(|| finished(d, o, opts));
        }
    }
}
