//! The rollout's invariants, checked by the tests after every run (test support only).

use std::collections::BTreeMap;

use super::readiness::readiness;
use super::{Decision, Observed, Options, State, decide_all};
use crate::manifest::Kind;
use crate::spec::Rollout;

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dataset {dataset}: {what}")]
pub struct InvariantViolation {
    pub dataset: String,
    pub what: String,
}

/// Checks the invariant of what exists, in the cluster or in Git (where nothing has a
/// status): a snapshot is present whenever a StatefulSet or claim of its generation is.
pub fn check_state(dataset: &str, observed: &[Observed]) -> Result<(), InvariantViolation> {
    let fail = |what: String| InvariantViolation {
        dataset: dataset.to_string(),
        what,
    };
    for o in observed {
        if o.snapshot.is_none() && (o.statefulset.is_some() || o.claims > 0) {
            return Err(fail(format!(
                "snapshot of {} is gone while its StatefulSet or {} claim(s) exist",
                o.id, o.claims
            )));
        }
        if o.snapshot.is_none() && o.verify_claim {
            return Err(fail(format!(
                "snapshot of {} is gone while the claim its verify Job mounts exists",
                o.id
            )));
        }

        // Per copy: every copy exists while anything restored from one does.
        let have = o.snapshot_copies().len();
        if let Some(want) = o.frozen_copies()
            && have < want as usize
            && (o.statefulset.is_some() || o.claims > 0)
        {
            return Err(fail(format!(
                "{have} of {want} snapshot copies of {} exist while its StatefulSet or {} claim(s) do",
                o.id, o.claims
            )));
        }
    }
    Ok(())
}

/// Every invariant of one observation, written once: [`check_state`] and at most one
/// StatefulSet not ready (one generation introduced at a time) for every observed dataset, and [`check_invariants`] for the decision made from it (datasets that left the
/// spec included). The lifecycle tests call it after every run and controller step.
pub fn check_all(
    rollout: &Rollout,
    observed: &BTreeMap<String, Vec<Observed>>,
    opts: &Options,
) -> Result<(), InvariantViolation> {
    for (name, gens) in observed {
        check_state(name, gens)?;
        // Live: the StatefulSet is created only once the verify Job completed (the Job is
        // pruned in that apply); it never runs beside a Job that has not. (Git holds both at
        // once in pull mode: Argo CD's sync waves order them.)
        if let Some(o) = gens.iter().find(|o| {
            o.statefulset.is_some()
                && o.verify
                    .as_ref()
                    .is_some_and(|j| !readiness(Kind::Job, j).is_ready())
        }) {
            return Err(InvariantViolation {
                dataset: name.clone(),
                what: format!(
                    "StatefulSet of {} exists while its verify Job has not completed",
                    o.id
                ),
            });
        }
        let unready: Vec<&str> = gens
            .iter()
            .filter(|o| {
                o.statefulset
                    .as_ref()
                    .is_some_and(|s| !readiness(Kind::StatefulSet, s).is_ready())
            })
            .map(|o| o.id.as_str())
            .collect();
        if unready.len() > 1 {
            return Err(InvariantViolation {
                dataset: name.clone(),
                what: format!(
                    "{} StatefulSets are being introduced at once: {}",
                    unready.len(),
                    unready.join(", ")
                ),
            });
        }
    }
    let (decisions, _) = decide_all(rollout, observed, opts);
    for d in &decisions {
        let gens = observed.get(&d.dataset).map(Vec::as_slice).unwrap_or(&[]);
        check_invariants(d, gens)?;
    }
    Ok(())
}

/// Checks the rollout invariants of a decision against what it was decided from. The lifecycle
/// tests call it after every run.
pub fn check_invariants(
    decision: &Decision,
    observed: &[Observed],
) -> Result<(), InvariantViolation> {
    let fail = |what: String| InvariantViolation {
        dataset: decision.dataset.clone(),
        what,
    };
    let introducing = decision
        .generations
        .iter()
        .filter(|g| {
            matches!(
                g.state,
                State::Producing | State::Snapshotting | State::Verifying | State::RollingOut
            )
        })
        .count();
    if introducing > 1 {
        return Err(fail(format!(
            "{introducing} generations are being introduced at once"
        )));
    }
    let rendered = |id: &str| decision.render.iter().find(|p| p.id == id);
    // The newest serving generation always keeps its snapshot and StatefulSet (its producer
    // too while it exists; a rolled-back generation has none).
    if let Some(s) = decision
        .generations
        .iter()
        .rev()
        .find(|g| g.state == State::Serving)
    {
        match rendered(&s.generation) {
            Some(p) if p.snapshot && p.statefulset => {}
            _ => {
                return Err(fail(format!(
                    "serving generation {} is not fully rendered",
                    s.generation
                )));
            }
        }
    }
    // Unchanged data: a skipped generation has no snapshot or StatefulSet, rendered or live,
    // and leaves a serving generation in place (fully rendered: checked above).
    for g in decision
        .generations
        .iter()
        .filter(|g| g.state == State::Unchanged)
    {
        let live = observed.iter().find(|o| o.id == g.generation);
        if rendered(&g.generation).is_some_and(|p| p.snapshot || p.statefulset)
            || live.is_some_and(|o| o.snapshot.is_some() || o.statefulset.is_some())
        {
            return Err(fail(format!(
                "unchanged generation {} has a snapshot or StatefulSet",
                g.generation
            )));
        }
        if !decision
            .generations
            .iter()
            .any(|s| s.state == State::Serving)
        {
            return Err(fail(format!(
                "generation {} is unchanged but no generation serves",
                g.generation
            )));
        }
    }
    // `consumer.switch: atomic`: the Service selects a generation whose StatefulSet is kept,
    // and the generation it selected keeps its StatefulSet until a run sees it switched.
    if let Some(switch) = &decision.service {
        if let Some(next) = &switch.next
            && rendered(next).is_none_or(|p| !p.statefulset)
        {
            return Err(fail(format!(
                "the Service selects generation {next}, whose StatefulSet is not rendered"
            )));
        }
        if let Some(now) = &switch.selects
            && !decision.removed
            && observed
                .iter()
                .any(|o| &o.id == now && o.statefulset.is_some())
            && rendered(now).is_none_or(|p| !p.statefulset)
        {
            return Err(fail(format!(
                "StatefulSet of {now} is dropped while the Service still selects it"
            )));
        }
    }
    // A ready generation that served before must not lose its StatefulSet unless a newer one
    // serves.
    let serving_exists = decision
        .generations
        .iter()
        .any(|g| g.state == State::Serving);
    for o in observed {
        let ready_sts = o
            .statefulset
            .as_ref()
            .is_some_and(|s| readiness(Kind::StatefulSet, s).is_ready());
        // (A dataset that left the spec retires on purpose: its StatefulSets go first.)
        if ready_sts
            && !serving_exists
            && !decision.removed
            && rendered(&o.id).is_none_or(|p| !p.statefulset)
        {
            return Err(fail(format!(
                "StatefulSet of {} is dropped while no generation serves",
                o.id
            )));
        }
        // A snapshot is never dropped while a StatefulSet or PVC of its generation exists.
        if o.snapshot.is_some()
            && (o.statefulset.is_some() || o.claims > 0)
            && rendered(&o.id).is_none_or(|p| !p.snapshot)
        {
            return Err(fail(format!(
                "snapshot of {} is dropped while its StatefulSet or PVCs exist",
                o.id
            )));
        }
        // ... nor any copy of it: the plan renders as many copies as the generation took.
        if let Some(want) = o.frozen_copies()
            && let Some(p) = rendered(&o.id).filter(|p| p.snapshot)
            && p.copies.is_some_and(|n| n != want)
        {
            return Err(fail(format!(
                "generation {} took {want} snapshot copies but {} are rendered",
                o.id,
                p.copies.unwrap_or_default()
            )));
        }
        // A StatefulSet is rendered only once every copy is ready.
        if o.statefulset.is_none()
            && rendered(&o.id).is_some_and(|p| p.statefulset)
            && (o.snapshot_copies().len() < o.frozen_copies().unwrap_or(0) as usize
                || !o
                    .snapshot_copies()
                    .iter()
                    .all(|s| readiness(Kind::VolumeSnapshot, s).is_ready()))
        {
            return Err(fail(format!(
                "StatefulSet of {} is rendered before every snapshot copy is ready",
                o.id
            )));
        }
    }
    Ok(())
}
