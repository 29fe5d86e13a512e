//! The cluster layer: server-side apply with diff-then-prune, safe pruning and a
//! kubectl-compatible ApplySet inventory.
//!
//! [`Manager`] is the one entry point. Its verbs are [`Manager::apply`] (pruning when asked)
//! and [`Manager::diff`], each with an options struct and each returning a [`ChangeSet`].
//! The building blocks the rollout state machine needs are public too: [`Manager::live`]
//! (one LIST per kind of everything the rollout owns, for statuses) and [`Manager::stats`]
//! (request counts, for tests and benchmarks). [`Manager::apply_named`] applies objects
//! outside any rollout (`install --apply`) with the same dry-run and apply steps.
//!
//! One file per step, as fluxcd/pkg `ssa` lays out its ResourceManager: `live` (reads),
//! `apply` (plan, dry-run, foreign check, writes), `diff`, `prune` ([`plan_prune`] and the
//! pure delete-time holds, then the deletes), `named`, `retry` (the one retry budget and
//! request counts); `compare`, `changes`, `applyset`, `readiness`, `lease` and `error` are
//! the pieces they share.
//!
//! A run:
//! 1. reads the ApplySet parent (one GET) and the live objects (one LIST per kind and
//!    namespace, by the ownership label selector);
//! 2. compares each desired object with its live copy ([`compare`]); unchanged objects get
//!    no request;
//! 3. checks every changed object with a server-side dry-run; any failure stops the run
//!    before the first write;
//! 4. widens the parent (old ∪ new group-kinds), then applies (field manager `snaproll`) kind
//!    by kind in dependency order, objects of one kind concurrently;
//! 5. prunes only when every apply succeeded, then narrows the parent.
//!
//! Throttling, server errors and timeouts are retried with bounded exponential backoff;
//! anything else stops the run naming the object.

#[expect(
    clippy::module_inception,
    reason = "one file per verb of the Manager; the verb is named apply like the layer"
)]
mod apply;
pub mod applyset;
pub mod changes;
pub mod compare;
mod diff;
pub mod error;
pub mod lease;
mod live;
pub mod named;
mod prune;
mod retry;
pub mod retry_after;

/// Readiness is a pure function of a live object: it lives with the rollout that decides on it.
pub use crate::rollout::readiness;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{ApiResource, GroupVersionKind};
use serde_json::Value;

use crate::manifest::{Kind, ObjectRef};

pub use crate::manifest::consumer_volume_selector;
pub use applyset::ApplySet;
pub use changes::{Action, Change, ChangeSet, Summary};
pub use error::{ApiCause, ApplyError};
pub use lease::LeaseGuard;
pub use live::LiveState;
pub use named::NamedObject;
pub use prune::{PrunePlan, plan_prune};
pub use readiness::{Readiness, readiness};
pub use retry::{RequestCounts, RetryPolicy};

use retry::{Counters, Verb};

/// The ApplySet parent is always applied with `force`, widening and narrowing alike, whatever
/// `--force-conflicts` says. The parent is snaproll's own bookkeeping (`read_parent` refuses one
/// another tool manages), and its annotations must record exactly what snaproll applies or a
/// later prune could miss members; a field manager left on it by a hand edit is no decision for
/// the user to make, and letting it block widening (or narrowing, after the deletes) would stop
/// every run. `--force-conflicts` is about the members, where another manager's fields are
/// someone's intent.
const PARENT_FORCE: bool = true;

/// How many requests of one step (objects of one kind, LISTs of one read) run at once.
const CONCURRENCY: usize = 8;

/// A run that stopped on an error, with what it had done until then (so the caller can still
/// print the partial change set).
#[derive(Debug)]
pub struct Failed {
    pub changes: ChangeSet,
    pub error: ApplyError,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.changes.summary;
        if self.changes.dry_run {
            write!(f, "dry run stopped; nothing was written")
        } else if matches!(self.error, ApplyError::Delete { .. }) || s.deleted > 0 {
            write!(f, "prune incomplete after {} deleted", s.deleted)
        } else {
            write!(
                f,
                "apply stopped after {} created, {} configured; nothing was pruned",
                s.created, s.configured
            )
        }
    }
}

impl Failed {
    /// The failed run's change set, its error recorded in it too (for `-o json`).
    fn boxed(mut changes: ChangeSet, error: ApplyError) -> Box<Failed> {
        changes.error = Some(error.to_string());
        Box::new(Failed { changes, error })
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Options of [`Manager::apply`].
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Prune owned ApplySet members that are no longer rendered, after every apply succeeded.
    pub prune: bool,
    /// Take ownership of fields other field managers own.
    pub force_conflicts: bool,
    /// Server-side dry-run only: report what would change, write nothing.
    pub dry_run: bool,
    /// Prune guards (see [`PruneOptions`]).
    pub prune_options: PruneOptions,
    /// The same objects were just dry-run against the same live state (the engine's preview
    /// before it took the Lease): skip the dry-run step and its look-alike check, which
    /// would only repeat them.
    pub already_dry_run: bool,
}

/// Options of [`Manager::diff`].
#[derive(Clone, Debug, Default)]
pub struct DiffOptions {
    /// Also show what `apply --prune` would delete.
    pub prune: bool,
    /// Check with `force` so conflicts do not hide the rest of the diff.
    pub force_conflicts: bool,
    /// ANSI colours in the unified diffs.
    pub color: bool,
}

/// Prune options of [`ApplyOptions`].
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Never delete a dataset's last ready StatefulSet while no rendered StatefulSet of that
    /// dataset is ready (the product's "last ready generation is never deleted").
    pub keep_last_ready: bool,
    /// Datasets deliberately removed (they left the spec): `keep_last_ready` does not hold
    /// their StatefulSets, which retire first.
    pub removed_datasets: BTreeSet<String>,
    /// Objects never to delete this run (the rollout state machine's own holds), with why.
    pub keep: BTreeMap<ObjectRef, String>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            keep_last_ready: true,
            removed_datasets: BTreeSet::new(),
            keep: BTreeMap::new(),
        }
    }
}

/// The cluster layer of one rollout. Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct Manager {
    client: kube::Client,
    rollout: String,
    namespace: String,
    set: ApplySet,
    retry: RetryPolicy,
    request_timeout: Duration,
    counters: Arc<Counters>,
}

impl Manager {
    /// The client it talks to the API with (for the rollout's Events, `crate::events`).
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The manager of rollout `rollout` whose objects live in `namespace`.
    pub fn new(client: kube::Client, rollout: &str, namespace: &str) -> Self {
        Manager {
            client,
            rollout: rollout.to_string(),
            namespace: namespace.to_string(),
            set: ApplySet::for_rollout(rollout, namespace),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(60),
            counters: Arc::new(Counters::default()),
        }
    }

    /// Retry policy for transient failures.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Time limit of one request attempt (a timeout counts as transient).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The rollout's ApplySet (parent name, namespace, id).
    pub fn applyset(&self) -> &ApplySet {
        &self.set
    }
}

impl Manager {
    fn change_set(&self, dry_run: bool) -> ChangeSet {
        ChangeSet {
            dry_run,
            applyset: self.set.id.clone(),
            ..ChangeSet::default()
        }
    }

    fn inventory_change(&self, action: Action, kinds: Option<&Value>) -> Change {
        Change {
            kind: "ConfigMap".to_string(),
            namespace: Some(self.set.namespace.clone()),
            name: self.set.name.clone(),
            action,
            reason: kinds
                .and_then(|p| p.pointer("/metadata/annotations"))
                .and_then(|a| a.get(applyset::ANNOTATION_GROUP_KINDS))
                .and_then(Value::as_str)
                .map(|k| {
                    format!(
                        "ApplySet parent records {}",
                        if k.is_empty() { "no kinds" } else { k }
                    )
                }),
            diff: None,
        }
    }
}

/// The `ApiResource` of a snaproll kind (no discovery request needed).
pub fn api_resource(kind: Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(kind.group(), kind.version(), kind.as_str()),
        kind.plural(),
    )
}
