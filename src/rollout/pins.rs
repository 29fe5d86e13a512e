//! Refusing a pin of a generation that cannot serve again.

use std::collections::BTreeMap;

use super::{Observed, Options, explicit, is_date, newest_date};
use crate::spec::Rollout;

/// Why a pin cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// `generations.pin` or `--generation` names a generation that cannot serve again: its
    /// snapshot is gone (rolling back to it would run a new producer under the old id).
    #[error(
        "dataset {dataset}: {via} names generation {generation}, which is not kept (no snapshot of it exists); {kept}"
    )]
    NotKept {
        dataset: String,
        generation: String,
        via: &'static str,
        kept: String,
    },
}

/// Refuses a pin (spec or `--generation`) of a generation that is not kept. The flag may also
/// start a new generation: it is refused only for an id that existed (seen without snapshot
/// or producer) or a date older than the newest generation that exists.
pub fn check_pins(
    rollout: &Rollout,
    observed: &BTreeMap<String, Vec<Observed>>,
    opts: &Options,
) -> Result<(), PinError> {
    let empty = Vec::new();
    for d in &rollout.spec.datasets {
        let gens = observed.get(&d.name).unwrap_or(&empty);
        let Some((via, g)) = explicit(d, opts) else {
            continue;
        };
        let seen = gens.iter().find(|o| &o.id == g);
        let usable = seen.is_some_and(|o| o.snapshot.is_some() || o.producer.is_some());
        let refused = match (via, seen) {
            _ if usable => false,
            ("generations.pin", _) => true,
            (_, Some(_)) => true,
            (_, None) => {
                // A new dated generation older than the newest that exists (a clock behind):
                // generations only move forward. Any other new id starts a generation.
                is_date(g)
                    && newest_date(gens.iter().map(|o| o.id.as_str()))
                        .is_some_and(|newest| g.as_str() < newest)
            }
        };
        if refused {
            let mut kept: Vec<&str> = gens
                .iter()
                .filter(|o| o.snapshot.is_some())
                .map(|o| o.id.as_str())
                .collect();
            kept.sort();
            return Err(PinError::NotKept {
                dataset: d.name.clone(),
                generation: g.clone(),
                via,
                kept: if kept.is_empty() {
                    "no generation is kept".to_string()
                } else {
                    format!(
                        "kept generations: {} (raise generations.keep to keep more for rollback)",
                        kept.join(", ")
                    )
                },
            });
        }
    }
    Ok(())
}
