//! What a decision renders: which parts of which generations. The rollout decides it and the
//! renderer follows it, so the type lives with the decision, below the renderer.

use std::collections::BTreeMap;

use crate::spec::Rollout;

/// Which parts of which generations to render. The render command renders one generation with
/// every part; the rollout state machine renders only the parts a generation has reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Dataset name → generations to render, oldest first.
    pub datasets: BTreeMap<String, Vec<GenerationPlan>>,
    /// Datasets whose shared source claim `<dataset>` is not rendered: the live one differs
    /// from the spec in a field the API server refuses to change in place (storage class,
    /// access modes, volume mode, a smaller size). Their new generations fill a fresh claim.
    pub fresh_source: std::collections::BTreeSet<String>,
    /// Dataset → the one generation its Service selects (`consumer.switch: atomic`); a dataset
    /// not named here has a Service selecting the pods of every generation.
    pub selects: BTreeMap<String, String>,
}

/// The parts of one generation of one dataset to render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationPlan {
    pub id: String,
    pub producer: bool,
    pub snapshot: bool,
    pub statefulset: bool,
    /// Storage request of the StatefulSet's claims (at least the snapshot's `restoreSize`);
    /// `None` uses the dataset's `storage.size`.
    pub claim_size: Option<String>,
    /// The claim the producer fills and the snapshot is taken of, when it is not the shared
    /// `<dataset>` claim: `<dataset>-<generation>`, rendered while the producer is.
    pub source: Option<String>,
    /// The claim template storage of the generation's StatefulSet as it exists: immutable, so
    /// rendered as it is even when the spec's storage changed since (the change reaches the
    /// next generation).
    pub claim_storage: Option<ClaimStorage>,
    /// The digest of the generation's data (`snaproll.dev/digest` on its snapshot), when the
    /// producer reported one.
    pub digest: Option<String>,
    /// The newest generation skipped as unchanged (`snaproll.dev/unchanged` on its snapshot):
    /// set on the serving generation so the skip survives the producer Pod's removal.
    pub unchanged: Option<String>,
    /// How many snapshot copies the generation takes, frozen once it has snapshots; `None`
    /// takes the spec's `snapshot.copies`. With more than one, the snapshots are
    /// `<dataset>-<gen>-<i>` and the StatefulSet comes with its claims, replica `r` restoring
    /// from copy `r % copies`.
    pub copies: Option<u32>,
    /// Render the verify Job and the claim it mounts (`consumer.verify`, when the spec has
    /// one): only while the generation is verifying.
    pub verify: bool,
    /// The verify outcome to record on the snapshot (`snaproll.dev/verify`): `passed`, or
    /// `failed: <message>`.
    pub verified: Option<String>,
}

/// The storage of a StatefulSet's claim template, as the template context's `storage` sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimStorage {
    /// `None` (the cluster's default class) is `null` to the template, as in the spec.
    pub storage_class_name: Option<String>,
    pub access_modes: Vec<String>,
    pub volume_mode: String,
    pub size: String,
}

impl GenerationPlan {
    /// A generation with no part rendered (to switch parts on one by one).
    pub fn none(id: &str) -> Self {
        GenerationPlan {
            id: id.to_string(),
            producer: false,
            snapshot: false,
            statefulset: false,
            claim_size: None,
            source: None,
            claim_storage: None,
            digest: None,
            unchanged: None,
            copies: None,
            verify: false,
            verified: None,
        }
    }

    /// A generation with every part rendered (the verify Job and claim too, when the spec
    /// has `consumer.verify`).
    pub fn full(id: &str) -> Self {
        GenerationPlan {
            id: id.to_string(),
            producer: true,
            snapshot: true,
            statefulset: true,
            claim_size: None,
            source: None,
            claim_storage: None,
            digest: None,
            unchanged: None,
            copies: None,
            verify: true,
            verified: None,
        }
    }

    /// A generation restoring from its ready snapshot: the snapshot and StatefulSet, and the
    /// producer only while it still exists. A rolled-back generation whose producer is gone
    /// must not run it again: the refresh can take hours and its result is not what is served.
    pub fn restoring(id: &str, producer: bool) -> Self {
        GenerationPlan {
            producer,
            verify: false,
            ..GenerationPlan::full(id)
        }
    }
}

impl Plan {
    /// Exactly the parts `decisions` render.
    pub fn of(
        decisions: &[super::Decision],
        fresh_source: std::collections::BTreeSet<String>,
    ) -> Plan {
        Plan {
            datasets: decisions
                .iter()
                .map(|d| (d.dataset.clone(), d.render.clone()))
                .collect(),
            fresh_source,
            selects: decisions
                .iter()
                .filter_map(|d| {
                    let next = d.service.as_ref()?.next.clone()?;
                    Some((d.dataset.clone(), next))
                })
                .collect(),
        }
    }

    /// Every dataset at generation `id`, every part.
    pub fn single(rollout: &Rollout, id: &str) -> Plan {
        Plan {
            datasets: rollout
                .spec
                .datasets
                .iter()
                .map(|d| (d.name.clone(), vec![GenerationPlan::full(id)]))
                .collect(),
            fresh_source: Default::default(),
            selects: rollout
                .spec
                .datasets
                .iter()
                .filter(|d| d.consumer.switch == crate::spec::Switch::Atomic)
                .map(|d| (d.name.clone(), id.to_string()))
                .collect(),
        }
    }
}
