//! The generation state machine: from what the cluster (or Git) shows, decide each dataset's
//! generations' states and which parts of which generations to render this run.
//!
//! Each run advances as far as it can and exits; the next run continues. The decision is a pure
//! function of the observation, so a run that observes nothing new renders exactly what the last
//! one did (no writes, no commit). Retirement is expressed by *not rendering* an object: prune
//! then deletes it, in reverse dependency order, and only after every apply succeeded.
//!
//! Per generation: producing → snapshotting → rolling out → serving → (kept) → retiring → retired,
//! or failed. Invariants (checked by the tests' `check_invariants`, test support only): at most
//! one generation is being introduced per dataset; the newest serving generation is always
//! rendered in full; a snapshot is rendered while any StatefulSet or PVC of its generation exists.
//!
//! Pure: no I/O, and below `apply` and `render` (the engine observes, then calls in here).
//! `decide` (from the cluster), `offline` (from Git), `retire` (retirement order and the holds
//! the prune or Git keep meanwhile), `source` (source claim changes roll forward), `pins`,
//! `plan` (what to render), `readiness` (of live objects), `digest` (unchanged data);
//! `invariants` for the tests.

mod decide;
mod digest;
#[cfg(any(test, feature = "test-support"))]
mod invariants;
mod offline;
mod pins;
mod plan;
pub mod readiness;
mod retire;
mod sizes;
mod source;
mod switch;
#[cfg(test)]
mod tests;
mod verify;

pub use decide::*;
#[cfg(any(test, feature = "test-support"))]
pub use invariants::*;
pub use offline::*;
pub use pins::*;
pub use plan::*;
pub use retire::*;
pub use source::*;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec;

/// Default time a snapshot may take to become ready before its generation is marked failed:
/// EBS snapshots of large volumes take hours, so this is generous.
pub const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// What was seen of one generation of one dataset.
#[derive(Clone, Debug, Default, PartialEq)]
///
/// The objects are shared with the list they were observed in (`Arc`): a decision reads them,
/// and copying every Pod, snapshot and StatefulSet of 1,000 datasets cost more than deciding.
pub struct Observed {
    pub id: String,
    pub producer: Option<Arc<Value>>,
    /// The generation's snapshot (the first copy, by name, when it takes several): `Some`
    /// whenever any snapshot of the generation exists.
    pub snapshot: Option<Arc<Value>>,
    /// Every snapshot copy of the generation, by name (`snapshot.copies`); empty means
    /// `snapshot` alone (see [`Observed::snapshot_copies`]).
    pub snapshots: Vec<Arc<Value>>,
    pub statefulset: Option<Arc<Value>>,
    /// Consumer PVCs (made by the StatefulSet controller) still present.
    pub claims: usize,
    /// The generation's verify Job (`consumer.verify`), while it exists.
    pub verify: Option<Arc<Value>>,
    /// Whether the claim the verify Job mounts (`<dataset>-<gen>-verify`) exists.
    pub verify_claim: bool,
}

impl Observed {
    /// Every snapshot copy that exists, by name.
    pub fn snapshot_copies(&self) -> Vec<&Value> {
        if self.snapshots.is_empty() {
            self.snapshot.as_deref().into_iter().collect()
        } else {
            self.snapshots.iter().map(|v| &**v).collect()
        }
    }

    /// How many snapshot copies the generation takes, frozen once it has any: the
    /// `snaproll.dev/copies` label of its snapshots, else (one unlabelled snapshot) 1.
    /// `None` before any snapshot exists (the spec's `snapshot.copies` then applies).
    pub fn frozen_copies(&self) -> Option<u32> {
        let copies = self.snapshot_copies();
        if copies.is_empty() {
            return None;
        }
        let labelled = copies
            .iter()
            .filter_map(|v| {
                crate::manifest::labels_of(v)
                    .get(crate::manifest::LABEL_COPIES)?
                    .parse::<u32>()
                    .ok()
            })
            .max();
        Some(labelled.unwrap_or(copies.len() as u32).max(1))
    }

    /// When the generation first appeared (the oldest creation timestamp among its objects).
    fn first_seen(&self) -> Option<jiff::Timestamp> {
        [&self.producer, &self.snapshot, &self.statefulset]
            .into_iter()
            .flatten()
            .filter_map(|v| created(v))
            .min()
    }
}

pub(crate) fn created(v: &Value) -> Option<jiff::Timestamp> {
    v.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
}

/// The state of a generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The producer Pod is filling the PVC.
    Producing,
    /// The producer succeeded; the VolumeSnapshot is being taken.
    Snapshotting,
    /// The snapshot is ready; the verify Job (`consumer.verify`) checks a claim restored from
    /// it before the StatefulSet is created.
    Verifying,
    /// The snapshot is ready; the StatefulSet is starting.
    RollingOut,
    /// The newest ready StatefulSet: what the Service sends traffic to.
    Serving,
    /// An older ready generation whose snapshot is kept for rollback.
    Kept,
    /// Being removed: StatefulSet first, then its PVCs, the producer, the snapshot.
    Retiring,
    /// Will not become ready; the previous generation keeps serving.
    Failed,
    /// Named by the schedule or `--generation` but not started yet.
    Waiting,
    /// Its producer reported the serving generation's digest: no snapshot is taken, nothing
    /// rolls, the serving generation stays.
    Unchanged,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Producing => "producing",
            State::Snapshotting => "snapshotting",
            State::Verifying => "verifying",
            State::RollingOut => "rolling out",
            State::Serving => "serving",
            State::Kept => "kept",
            State::Retiring => "retiring",
            State::Failed => "failed",
            State::Waiting => "waiting",
            State::Unchanged => "unchanged",
        })
    }
}

/// One generation's state, for `status` and the run's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationStatus {
    pub generation: String,
    pub state: State,
    /// RFC 3339 time the generation first appeared (its oldest object's creation), when known:
    /// not when its current state began, which the objects do not record.
    #[serde(rename = "firstSeen")]
    pub first_seen: Option<String>,
    pub detail: String,
}

/// What to do for one dataset this run.
/// Deserialized only from what an earlier run of this build kept (see `engine::delta`); the
/// fields skipped in JSON come back empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub dataset: String,
    /// Oldest first.
    pub generations: Vec<GenerationStatus>,
    #[serde(skip)]
    pub render: Vec<GenerationPlan>,
    /// The dataset left the spec: `render` lists what the prune holds, nothing is rendered.
    #[serde(skip)]
    pub removed: bool,
    /// Why the dataset has no generation at all, when that is expected: a manual schedule
    /// waits for `--generation` (shown instead of an empty state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// What the run did not do and why, one line each (a clock behind the newest generation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Look-alikes: objects with the dataset's ownership labels that are not members of the
    /// rollout's ApplySet (`Kind/name`); ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign: Vec<String>,
    /// The shared source claim, when it is no longer rendered (its spec changed in a way the
    /// API server refuses in place) but a rendered producer still uses it: kept until then.
    #[serde(skip)]
    pub held_source: Option<String>,
    /// `consumer.switch: atomic`: which generation the Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSwitch>,
}

/// What the Service of a dataset with `consumer.switch: atomic` selects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSwitch {
    /// The generation the Service selects as the run found it (`None`: no Service yet, or one
    /// selecting every generation).
    pub selects: Option<String>,
    /// The generation it selects once this run's objects are applied.
    pub next: Option<String>,
}

/// The per-dataset objects shared by all generations, as they exist (live, or as Git holds
/// them): what a decision needs of them besides the generations.
#[derive(Clone, Debug, Default)]
pub struct Shared {
    /// Dataset → its shared source claim `<dataset>`.
    pub sources: BTreeMap<String, Arc<Value>>,
    /// Dataset → the generation its Service selects (`consumer.switch: atomic`).
    pub selects: BTreeMap<String, String>,
}

/// The names of the spec's datasets, as a set: a scan of the spec per object or per observed
/// dataset grew with the square of their number.
pub(super) fn spec_names(rollout: &crate::spec::Rollout) -> std::collections::HashSet<&str> {
    rollout
        .spec
        .datasets
        .iter()
        .map(|d| d.name.as_str())
        .collect()
}

/// Where each dataset's decision is in `decisions`: the passes over the spec's datasets find
/// theirs here (a scan per dataset grew with the square of their number).
pub(super) fn decision_index(decisions: &[Decision]) -> std::collections::HashMap<String, usize> {
    decisions
        .iter()
        .enumerate()
        .map(|(i, d)| (d.dataset.clone(), i))
        .collect()
}

impl Decision {
    /// Whether any generation of this dataset is failed.
    pub fn failed(&self) -> bool {
        self.generations.iter().any(|g| g.state == State::Failed)
    }
}

/// Inputs of a decision besides the observation.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--generation`: start (or pin, when it exists and is ready) this generation; per
    /// dataset when `DATASET=ID` names it.
    pub generation: spec::GenerationIds,
    /// Today's UTC date, the generation a `daily` schedule wants.
    pub today: String,
    pub now: jiff::Timestamp,
    /// `--snapshot-timeout`: overrides every dataset's `snapshot.timeout` for this run.
    pub snapshot_timeout: Option<Duration>,
    /// Whether a due generation is started (a run) or only reported (`status`).
    pub start: bool,
    /// The rollout's name and namespace, for the cleanup commands `status` names.
    pub rollout: String,
    pub namespace: String,
}

/// Whether a generation id is a date (`YYYY-MM-DD`): dated generations order by date.
pub fn is_date(id: &str) -> bool {
    id.len() == 10 && id.parse::<jiff::civil::Date>().is_ok()
}

/// The newest dated generation among `ids`.
pub(crate) fn newest_date<'a>(ids: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    ids.filter(|id| is_date(id)).max()
}
