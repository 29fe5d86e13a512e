//! Decisions without a cluster, from what Git holds.

use std::collections::BTreeMap;

use super::{
    Decision, GenerationPlan, GenerationStatus, Observed, Options, Plan, Shared, State,
    decide_each, explicit, wanted,
};
use crate::spec::{Dataset, Rollout};

/// Decides every dataset of the spec from what Git holds (see [`decide_offline`]), knowing each
/// dataset's shared source claim as Git holds it. Datasets that left the spec are not decided:
/// Git drops their StatefulSets first and the rest one run later (`removed_git_holds`).
pub fn decide_all_offline(
    rollout: &Rollout,
    in_git: &BTreeMap<String, Vec<Observed>>,
    shared: &Shared,
    opts: &Options,
) -> (Vec<Decision>, Plan) {
    decide_each(rollout, in_git, shared, opts, decide_offline, false)
}

/// Decides one dataset with no cluster access, from what Git holds. Without statuses nothing
/// can be waited for, so Git keeps the wanted generation in full, the newest previous
/// generation that had a StatefulSet in full too (it serves until Argo CD or Flux, applying
/// in sync-wave order, has brought the new one up), and the snapshots of older generations
/// within `keep`; the rest leaves Git, a StatefulSet one run before its snapshot.
pub fn decide_offline(d: &Dataset, in_git: &[Observed], opts: &Options) -> Decision {
    let mut ids: Vec<&Observed> = in_git.iter().collect();
    ids.sort_by(|a, b| a.id.cmp(&b.id));
    let mut notes = Vec::new();
    let wanted = wanted(
        d,
        explicit(d, opts),
        ids.iter().map(|o| o.id.as_str()),
        super::decide::skipped(in_git).as_deref(),
        opts,
        &mut notes,
    )
    .or_else(|| ids.last().map(|o| o.id.clone()));
    let mut render = Vec::new();
    let mut generations = Vec::new();
    let previous = ids
        .iter()
        .rev()
        .find(|o| Some(&o.id) != wanted.as_ref() && o.statefulset.is_some())
        .map(|o| o.id.clone());
    let mut kept_budget = d.generations.keep.saturating_sub(1) as usize;
    for o in ids.iter().rev() {
        if Some(&o.id) == wanted.as_ref() {
            continue;
        }
        let (state, detail) = if Some(&o.id) == previous.as_ref() {
            // Verified when it was the new generation: its verify Job leaves Git.
            render.push(GenerationPlan {
                verify: false,
                ..GenerationPlan::full(&o.id)
            });
            (
                State::Serving,
                "kept in Git until the new generation is applied".to_string(),
            )
        } else if kept_budget > 0 && o.snapshot.is_some() {
            kept_budget -= 1;
            render.push(GenerationPlan {
                snapshot: true,
                ..GenerationPlan::none(&o.id)
            });
            (State::Kept, "snapshot kept for rollback".to_string())
        } else if o.statefulset.is_some() && o.snapshot.is_some() {
            // Never in the same commit as its StatefulSet: the snapshot leaves Git one run
            // later, so a controller pruning both cannot delete it while the claims restored
            // from it still exist.
            render.push(GenerationPlan {
                snapshot: true,
                ..GenerationPlan::none(&o.id)
            });
            (
                State::Retiring,
                "StatefulSet removed from Git; the snapshot leaves on the next run".to_string(),
            )
        } else {
            (State::Retiring, "removed from Git".to_string())
        };
        generations.push(GenerationStatus {
            generation: o.id.clone(),
            state,
            first_seen: None,
            detail,
        });
    }
    if let Some(w) = wanted {
        render.push(GenerationPlan::full(&w));
        generations.push(GenerationStatus {
            generation: w,
            state: State::RollingOut,
            first_seen: None,
            detail: "in Git; Argo CD or Flux applies it in sync-wave order".to_string(),
        });
    }
    generations.reverse();
    generations.sort_by(|a, b| a.generation.cmp(&b.generation));
    render.sort_by(|a, b| a.id.cmp(&b.id));
    // A generation Git holds snapshots of keeps their count (see `Observed::frozen_copies`).
    for p in &mut render {
        p.copies = ids
            .iter()
            .find(|o| o.id == p.id)
            .and_then(|o| o.frozen_copies());
    }
    Decision {
        dataset: d.name.clone(),
        waiting: super::decide::waiting(d, &generations),
        generations,
        render,
        removed: false,
        notes,
        foreign: Vec::new(),
        held_source: None,
        service: None,
    }
}
