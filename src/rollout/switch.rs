//! `consumer.switch: atomic`: which generation each dataset's Service selects, and the hold
//! that keeps the generation it leaves until a run has seen it switched.

use std::collections::BTreeMap;

use super::{
    Decision, GenerationPlan, Observed, ServiceSwitch, State, sizes::claim_size,
    sizes::restore_size,
};
use crate::spec::{self, Rollout};

/// `consumer.switch: atomic`: the Service of each such dataset selects one generation, the
/// serving one. It moves to a newer generation only once that one is ready (in one apply, as
/// the Service is one object), and the generation it selected keeps its StatefulSet until a
/// run has seen the Service select the new one: the old generation retires after the switch,
/// never in the apply that makes it. With no generation serving, the Service stays on the
/// generation it selects while that one's StatefulSet is kept, else selects the one rolling
/// out. The decision's `service.next` is what the rendered Service selects ([`super::Plan::of`]).
pub(super) fn switch_atomic(
    rollout: &Rollout,
    observed: &BTreeMap<String, Vec<Observed>>,
    live: &BTreeMap<String, String>,
    decisions: &mut [Decision],
) {
    let empty = Vec::new();
    let index = super::decision_index(decisions);
    for d in &rollout.spec.datasets {
        if d.consumer.switch != spec::Switch::Atomic {
            continue;
        }
        let Some(&at) = index.get(&d.name) else {
            continue;
        };
        let decision = &mut decisions[at];
        let gens = observed.get(&d.name).unwrap_or(&empty);
        let now = live.get(&d.name).cloned();
        let in_state = |state: State| {
            decision
                .generations
                .iter()
                .rev()
                .find(|g| g.state == state)
                .map(|g| g.generation.clone())
        };
        let has_sts = |decision: &Decision, id: &str| {
            decision.render.iter().any(|p| p.id == id && p.statefulset)
        };
        let next = in_state(State::Serving).or_else(|| {
            now.clone()
                .filter(|g| has_sts(decision, g))
                .or_else(|| in_state(State::RollingOut))
        });
        if let (Some(old), Some(new)) = (&now, &next)
            && old != new
            && let Some(o) = gens
                .iter()
                .find(|o| &o.id == old && o.statefulset.is_some())
            && !has_sts(decision, old)
        {
            // Keep the generation the Service still selects: it retires on a later run, once
            // the Service seen live selects `new`.
            let restore = restore_size(o);
            let plan = match decision.render.iter_mut().find(|p| &p.id == old) {
                Some(p) => p,
                None => {
                    decision.render.push(GenerationPlan::none(old));
                    decision.render.last_mut().expect("just pushed")
                }
            };
            plan.statefulset = true;
            plan.snapshot = o.snapshot.is_some();
            plan.producer = o.producer.is_some();
            plan.claim_size = claim_size(d, &restore);
            plan.copies = o.frozen_copies();
            if let Some(g) = decision
                .generations
                .iter_mut()
                .find(|g| &g.generation == old)
            {
                g.detail = format!(
                    "the Service still selects it; switches to {new} now, and it retires on the next run"
                );
            }
            // Back in the decision's order (its statuses are oldest first).
            let order: Vec<String> = decision
                .generations
                .iter()
                .map(|g| g.generation.clone())
                .collect();
            decision
                .render
                .sort_by_key(|p| order.iter().position(|g| g == &p.id));
        }
        decision.service = Some(ServiceSwitch { selects: now, next });
    }
}
