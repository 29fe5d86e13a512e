//! Deciding one dataset (or all of a rollout) from what the cluster shows.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::readiness::{Readiness, readiness};
use super::sizes::{claim_size, restore_size, restore_size_of};
use super::verify::{self, Verification};
use super::{
    Decision, GenerationStatus, Observed, Options, State, cleanup_command, created, decide_removed,
    is_date, newest_date, retire, retiring_detail, roll_source_forward,
};
use super::{GenerationPlan, Plan};
use super::{Shared, digest, switch::switch_atomic};
use crate::manifest::Kind;
use crate::spec::{Dataset, Rollout, Schedule};

/// Decides every dataset of a rollout, and every observed dataset that left the spec (it
/// retires in the normal order); the plan renders exactly the decided parts (the renderer
/// skips datasets the spec no longer has: their plans say what the prune must hold).
pub fn decide_all(
    rollout: &Rollout,
    observed: &BTreeMap<String, Vec<Observed>>,
    opts: &Options,
) -> (Vec<Decision>, Plan) {
    decide_all_with(rollout, observed, &Shared::default(), opts)
}

/// [`decide_all`], knowing each dataset's shared objects as they exist (live, or as Git holds
/// them): its source claim, so that a change the API server refuses in place rolls forward
/// ([`roll_source_forward`]), and what its Service selects ([`switch_atomic`]).
pub fn decide_all_with(
    rollout: &Rollout,
    observed: &BTreeMap<String, Vec<Observed>>,
    shared: &Shared,
    opts: &Options,
) -> (Vec<Decision>, Plan) {
    decide_each(rollout, observed, shared, opts, decide, true)
}

/// The one sequence behind [`decide_all_with`] and [`super::decide_all_offline`]: `one` decides
/// each dataset of the spec; online (`removed`), every observed dataset that left it retires;
/// then source changes roll forward and the plan renders exactly the decided parts.
pub(super) fn decide_each(
    rollout: &Rollout,
    observed: &BTreeMap<String, Vec<Observed>>,
    shared: &Shared,
    opts: &Options,
    one: fn(&Dataset, &[Observed], &Options) -> Decision,
    removed: bool,
) -> (Vec<Decision>, Plan) {
    let empty = Vec::new();
    let mut decisions: Vec<Decision> = rollout
        .spec
        .datasets
        .iter()
        .map(|d| one(d, observed.get(&d.name).unwrap_or(&empty), opts))
        .collect();
    // One decision per spec dataset, in the spec's order.
    for (d, spec) in decisions.iter_mut().zip(&rollout.spec.datasets) {
        let gens = observed.get(&d.dataset).unwrap_or(&empty);
        digest::record(d, gens);
        verify::record(spec, d, gens, opts);
    }
    let in_spec = super::spec_names(rollout);
    for (name, gens) in observed.iter().filter(|_| removed) {
        if !in_spec.contains(name.as_str()) {
            decisions.push(decide_removed(name, gens, opts));
        }
    }
    switch_atomic(rollout, observed, &shared.selects, &mut decisions);
    let fresh_source = roll_source_forward(rollout, observed, &shared.sources, &mut decisions);
    let plan = Plan::of(&decisions, fresh_source);
    (decisions, plan)
}

/// The raw condition of one observed generation, before its place among the others is known.
#[derive(Debug)]
enum Raw {
    Producing(String),
    Failed(String),
    Snapshotting(String),
    /// Snapshot ready; `restore` is its restoreSize.
    SnapshotReady {
        restore: Option<String>,
    },
    /// Snapshot ready; the verify Job (`consumer.verify`) has not passed yet.
    Verifying {
        restore: Option<String>,
        detail: String,
    },
    RollingOut {
        restore: Option<String>,
        detail: String,
    },
    Ready {
        restore: Option<String>,
    },
    /// Only leftovers (claims, or nothing).
    Leftover,
}

fn raw_state(d: &Dataset, o: &Observed, opts: &Options) -> Raw {
    let restore = restore_size(o);
    let timeout = opts
        .snapshot_timeout
        .unwrap_or_else(|| d.snapshot_timeout());
    if let Some(sts) = &o.statefulset {
        return match readiness(Kind::StatefulSet, sts) {
            Readiness::Ready => Raw::Ready { restore },
            Readiness::Pending(d) | Readiness::Failed(d) => Raw::RollingOut { restore, detail: d },
        };
    }
    let copies = o.snapshot_copies();
    if !copies.is_empty() {
        // Every copy must be ready (the StatefulSet's replicas restore from all of them).
        for snap in &copies {
            let state = match readiness(Kind::VolumeSnapshot, snap) {
                // The claim size depends on restoreSize, and a StatefulSet's claim template is
                // immutable: created at the spec size, it could not grow to a larger restoreSize
                // reported later. So a ready snapshot without one is waited for like a pending one.
                Readiness::Ready if restore_size_of([*snap]).is_none() => Readiness::Pending(
                    "ready to use but reports no restoreSize yet (the claim size depends on it)"
                        .to_string(),
                ),
                r => r,
            };
            let (Readiness::Pending(d) | Readiness::Failed(d)) = state else {
                continue;
            };
            let name = snap
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let waited = created(snap).map(|t| opts.now.duration_since(t));
            return match waited {
                Some(w) if w.as_secs() >= timeout.as_secs() as i64 => Raw::Failed(format!(
                    "snapshot {name} not ready after {}: {d}",
                    human(timeout)
                )),
                _ => Raw::Snapshotting(format!("snapshot {name} {d}")),
            };
        }
        let want = o.frozen_copies().unwrap_or(1) as usize;
        if copies.len() < want {
            return Raw::Snapshotting(format!("{} of {want} snapshot copies taken", copies.len()));
        }
        if d.consumer.verify.is_some() {
            match verify::verification(d, o, opts) {
                Verification::Passed => {}
                Verification::Failed(why) => return Raw::Failed(why),
                Verification::Running(detail) => return Raw::Verifying { restore, detail },
            }
        }
        return Raw::SnapshotReady { restore };
    }
    if let Some(pod) = &o.producer {
        return match readiness(Kind::Pod, pod) {
            Readiness::Ready => Raw::Snapshotting("producer succeeded; taking the snapshot".into()),
            Readiness::Failed(r) => Raw::Failed(format!("producer failed: {r}")),
            Readiness::Pending(phase) => match crash_loop(pod, d.producer.max_restarts) {
                Some(why) => Raw::Failed(format!("producer failed: {why}")),
                None => Raw::Producing(format!("producer {}", producer_detail(pod, &phase))),
            },
        };
    }
    Raw::Leftover
}

/// A producer still Running (or Pending in back-off) whose container restarted more than
/// `max_restarts` times: under `restartPolicy: OnFailure` the phase never becomes Failed, so
/// the restarts are what say it will not finish. Names the count and the last termination.
fn crash_loop(pod: &Value, max_restarts: i64) -> Option<String> {
    let status = pod.pointer("/status/containerStatuses/0")?;
    let restarts = status.get("restartCount").and_then(Value::as_i64)?;
    if restarts <= max_restarts {
        return None;
    }
    let last = status.pointer("/lastState/terminated");
    let reason = last
        .and_then(|t| t.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let code = last
        .and_then(|t| t.get("exitCode"))
        .and_then(Value::as_i64)
        .map(|c| format!(", exit code {c}"))
        .unwrap_or_default();
    Some(format!(
        "crash loop: {restarts} restarts, more than producer.maxRestarts {max_restarts} (last: {reason}{code})"
    ))
}

/// The pod phase plus restarts and the last termination reason, which say more than a phase
/// for a producer that keeps failing under `restartPolicy: OnFailure`.
fn producer_detail(pod: &Value, phase: &str) -> String {
    let status = pod
        .pointer("/status/containerStatuses/0")
        .cloned()
        .unwrap_or(Value::Null);
    let restarts = status
        .get("restartCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let last = status
        .pointer("/lastState/terminated/reason")
        .and_then(Value::as_str);
    match (restarts, last) {
        (0, _) => phase.to_string(),
        (n, Some(r)) => format!("{phase}, {n} restarts (last: {r})"),
        (n, None) => format!("{phase}, {n} restarts"),
    }
}

pub(super) fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Decides one dataset.
pub fn decide(d: &Dataset, observed: &[Observed], opts: &Options) -> Decision {
    let mut gens: Vec<&Observed> = observed.iter().collect();
    if gens.iter().all(|o| is_date(&o.id)) {
        // Dated generations are ordered by their date, never by when their objects appeared:
        // a generation started by a run whose clock was behind is older, not newer.
        gens.sort_by(|a, b| a.id.cmp(&b.id));
    } else {
        gens.sort_by(|a, b| {
            a.first_seen()
                .cmp(&b.first_seen())
                .then_with(|| a.id.cmp(&b.id))
        });
    }
    let raws: Vec<Raw> = gens.iter().map(|o| raw_state(d, o, opts)).collect();

    // The generation `--generation`, the pin or the schedule asks for.
    let mut notes = Vec::new();
    let explicit = explicit(d, opts);
    let wanted = wanted(
        d,
        explicit,
        gens.iter().map(|o| o.id.as_str()),
        skipped(observed).as_deref(),
        opts,
        &mut notes,
    );
    // A pinned generation: `generations.pin` or `--generation` naming an existing one whose
    // snapshot is usable.
    let pinned = explicit.and_then(|(_, g)| {
        gens.iter().position(|o| &o.id == g).filter(|&i| {
            matches!(
                raws[i],
                Raw::Ready { .. }
                    | Raw::RollingOut { .. }
                    | Raw::SnapshotReady { .. }
                    | Raw::Verifying { .. }
            )
        })
    });
    let newest_ready = raws.iter().rposition(|r| matches!(r, Raw::Ready { .. }));
    let serving = match pinned {
        Some(p) if matches!(raws[p], Raw::Ready { .. }) => Some(p),
        _ => newest_ready,
    };
    // The generation being introduced: newer than the serving one and not failed; with a pin,
    // the pinned one if it is not serving yet.
    let in_progress: Option<usize> = match pinned {
        Some(p) if Some(p) != serving => Some(p),
        Some(_) => None,
        None => (0..gens.len()).rev().find(|&i| {
            serving.is_none_or(|s| i > s)
                && !matches!(raws[i], Raw::Failed(_) | Raw::Leftover | Raw::Ready { .. })
        }),
    };
    // Unchanged data: the generation being introduced has no snapshot yet and its producer
    // succeeded reporting the serving generation's digest. It takes no snapshot, its producer
    // is pruned, and the serving generation records it (see `digest`).
    let serving_digest = serving.and_then(|s| digest::snapshot_digest(gens[s]));
    let unchanged = in_progress.filter(|&i| {
        pinned != Some(i)
            && gens[i].snapshot.is_none()
            && matches!(raws[i], Raw::Snapshotting(_))
            && serving_digest.is_some()
            && digest::producer_digest(gens[i]) == serving_digest
    });
    let in_progress = in_progress.filter(|&i| Some(i) != unchanged);

    let mut statuses = Vec::new();
    let mut render = Vec::new();
    let cleanup = |g: &str| cleanup_command(opts, &d.name, g);
    let mut kept_budget = d.generations.keep.saturating_sub(1) as usize;
    for (i, (o, raw)) in gens.iter().zip(&raws).enumerate().rev() {
        let first_seen = o.first_seen().map(|t| t.to_string());
        let mut plan = GenerationPlan::none(&o.id);
        let (state, detail) = if Some(i) == serving {
            let Raw::Ready { restore } = raw else {
                unreachable!()
            };
            plan = GenerationPlan::restoring(&o.id, o.producer.is_some());
            plan.claim_size = claim_size(d, restore);
            let sts = &o.statefulset;
            (
                State::Serving,
                sts.as_deref().map(replicas_detail).unwrap_or_default(),
            )
        } else if Some(i) == in_progress {
            match raw {
                Raw::Producing(detail) => {
                    plan.producer = true;
                    (State::Producing, detail.clone())
                }
                Raw::Snapshotting(detail) => {
                    plan.producer = true;
                    plan.snapshot = true;
                    (State::Snapshotting, detail.clone())
                }
                Raw::SnapshotReady { restore } => {
                    plan = GenerationPlan::restoring(&o.id, o.producer.is_some());
                    plan.claim_size = claim_size(d, restore);
                    (
                        State::RollingOut,
                        "snapshot ready; starting the StatefulSet".to_string(),
                    )
                }
                Raw::Verifying { restore, detail } => {
                    // The snapshot and the verify Job with its claim; no StatefulSet yet.
                    plan = GenerationPlan::restoring(&o.id, o.producer.is_some());
                    plan.statefulset = false;
                    plan.verify = true;
                    plan.claim_size = claim_size(d, restore);
                    (State::Verifying, detail.clone())
                }
                Raw::RollingOut { restore, detail } => {
                    plan = GenerationPlan::restoring(&o.id, o.producer.is_some());
                    plan.claim_size = claim_size(d, restore);
                    (State::RollingOut, detail.clone())
                }
                Raw::Ready { restore } => {
                    plan = GenerationPlan::restoring(&o.id, o.producer.is_some());
                    plan.claim_size = claim_size(d, restore);
                    (State::RollingOut, "ready; taking over".to_string())
                }
                Raw::Failed(_) | Raw::Leftover => unreachable!("never chosen as in progress"),
            }
        } else if Some(i) == unchanged {
            (
                State::Unchanged,
                unchanged_detail(
                    serving_digest.as_deref(),
                    serving.map(|s| gens[s].id.as_str()),
                ),
            )
        } else if serving.is_none_or(|s| i > s) {
            // Newer than serving and not the one being introduced: failed, or superseded.
            match raw {
                Raw::Failed(reason) => {
                    plan.producer = o.producer.is_some();
                    plan.snapshot = o.snapshot.is_some();
                    (State::Failed, reason.clone())
                }
                _ => retire(
                    o,
                    &mut plan,
                    "superseded by a newer generation",
                    &cleanup(&o.id),
                ),
            }
        } else {
            // Older than serving.
            let was_ready = matches!(
                raw,
                Raw::Ready { .. }
                    | Raw::RollingOut { .. }
                    | Raw::SnapshotReady { .. }
                    | Raw::Verifying { .. }
            );
            if was_ready && kept_budget > 0 && o.snapshot.is_some() {
                kept_budget -= 1;
                if o.statefulset.is_some() || o.claims > 0 {
                    plan.producer = o.producer.is_some();
                    plan.snapshot = true;
                    (State::Retiring, retiring_detail(o, true, &cleanup(&o.id)))
                } else {
                    plan.snapshot = true;
                    (State::Kept, "snapshot kept for rollback".to_string())
                }
            } else {
                retire(o, &mut plan, "", &cleanup(&o.id))
            }
        };
        // Frozen once the generation has snapshots: its claims' dataSource never changes.
        plan.copies = o.frozen_copies();
        if plan.producer || plan.snapshot || plan.statefulset {
            render.push(plan);
        }
        statuses.push(GenerationStatus {
            generation: o.id.clone(),
            state,
            first_seen,
            detail,
        });
    }

    if let Some(s) = serving {
        let serving_id = &gens[s].id;
        let plan = render.iter_mut().find(|p| &p.id == serving_id);
        match (unchanged, plan) {
            // Recorded in the same apply that prunes the producer: a run that fails before
            // the prune leaves the producer, so the decision is made again.
            (Some(u), Some(plan)) => plan.unchanged = Some(gens[u].id.clone()),
            // The skipped generation, recorded on the serving snapshot, while nothing newer
            // than the serving generation exists or is due: shown, so `status` says why
            // nothing rolled.
            (None, _) if s + 1 == gens.len() && wanted.is_none() => {
                if let Some(u) =
                    digest::recorded_unchanged(gens[s]).filter(|u| !gens.iter().any(|o| &o.id == u))
                {
                    statuses.push(GenerationStatus {
                        generation: u,
                        state: State::Unchanged,
                        first_seen: None,
                        detail: unchanged_detail(serving_digest.as_deref(), Some(serving_id)),
                    });
                }
            }
            _ => {}
        }
    }

    // Start the wanted generation when it is new and nothing else is being introduced.
    if let Some(w) = wanted
        && !gens.iter().any(|o| o.id == w)
    {
        if let Some(p) = in_progress {
            statuses.push(GenerationStatus {
                generation: w.clone(),
                state: State::Waiting,
                first_seen: None,
                detail: format!("waits for generation {} to finish", gens[p].id),
            });
        } else if !opts.start {
            statuses.push(GenerationStatus {
                generation: w.clone(),
                state: State::Waiting,
                first_seen: None,
                detail: "due; the next reconcile starts it".to_string(),
            });
        } else {
            render.push(GenerationPlan {
                producer: true,
                ..GenerationPlan::none(&w)
            });
            statuses.push(GenerationStatus {
                generation: w.clone(),
                state: State::Producing,
                first_seen: None,
                detail: "producer created".to_string(),
            });
        }
    }
    statuses.sort_by_key(|s| {
        gens.iter()
            .position(|o| o.id == s.generation)
            .unwrap_or(usize::MAX)
    });
    render.sort_by_key(|p| gens.iter().position(|o| o.id == p.id).unwrap_or(usize::MAX));
    Decision {
        dataset: d.name.clone(),
        waiting: waiting(d, &statuses),
        generations: statuses,
        render,
        removed: false,
        notes,
        foreign: Vec::new(),
        held_source: None,
        service: None,
    }
}

/// What a dataset without any generation waits for: a manual one, for `--generation`.
pub(super) fn waiting(d: &Dataset, generations: &[GenerationStatus]) -> Option<String> {
    (generations.is_empty() && d.generations.schedule == Schedule::Manual)
        .then(|| "manual: waiting for --generation".to_string())
}

/// The generation named explicitly, and by what: `generations.pin`, else `--generation`. Read
/// once per decision ([`wanted`], the pin) and by [`super::check_pins`].
pub(super) fn explicit<'a>(
    d: &'a Dataset,
    opts: &'a Options,
) -> Option<(&'static str, &'a String)> {
    match (&d.generations.pin, opts.generation.get(&d.name)) {
        (Some(p), _) => Some(("generations.pin", p)),
        (None, Some(f)) => Some(("--generation", f)),
        (None, None) => None,
    }
}

/// The generation a dataset asks for: its pin, else `--generation`, else the schedule's
/// (today on a daily schedule). Generations only move forward: when the run's clock is behind
/// the newest dated generation that exists, the schedule asks for nothing and the run says so
/// in `notes` (an older generation would otherwise be started and, once ready, serve in place
/// of the newer one). Rollback is explicit: a pin. A generation skipped as unchanged
/// (`unchanged`, recorded on a snapshot) is not started again: not by `--generation` naming
/// it, nor by the schedule up to and including its date.
pub(super) fn wanted<'a>(
    d: &Dataset,
    explicit: Option<(&'static str, &String)>,
    ids: impl Iterator<Item = &'a str>,
    unchanged: Option<&str>,
    opts: &Options,
    notes: &mut Vec<String>,
) -> Option<String> {
    if let Some((_, g)) = explicit {
        return (unchanged != Some(g.as_str())).then(|| g.clone());
    }
    match d.generations.schedule {
        Schedule::Manual => None,
        Schedule::Daily => match newest_date(ids) {
            Some(newest) if newest > opts.today.as_str() => {
                notes.push(format!(
                    "dataset {}: the clock says {}, behind its newest generation {newest}; not starting an older generation (generations only move forward)",
                    d.name, opts.today
                ));
                None
            }
            _ if unchanged.is_some_and(|u| is_date(u) && opts.today.as_str() <= u) => None,
            _ => Some(opts.today.clone()),
        },
    }
}

/// The newest generation recorded as skipped (unchanged data) on any snapshot of the dataset.
pub(super) fn skipped(observed: &[Observed]) -> Option<String> {
    observed.iter().filter_map(digest::recorded_unchanged).max()
}

fn unchanged_detail(digest: Option<&str>, serving: Option<&str>) -> String {
    format!(
        "data unchanged (digest {}); generation {} keeps serving",
        digest.unwrap_or("?"),
        serving.unwrap_or("?")
    )
}

fn replicas_detail(sts: &Value) -> String {
    let int = |p: &str, default| sts.pointer(p).and_then(Value::as_i64).unwrap_or(default);
    format!(
        "{}/{} replicas ready",
        int("/status/readyReplicas", 0),
        int("/spec/replicas", 1)
    )
}
