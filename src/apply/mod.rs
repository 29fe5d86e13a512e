//! The cluster layer: server-side apply with diff-then-prune, safe pruning and a
//! kubectl-compatible ApplySet inventory.
//!
//! [`Manager`] is the one entry point. Its verbs are [`Manager::apply`], [`Manager::diff`],
//! [`Manager::prune`] and [`Manager::wait`], each with an options struct and each returning a
//! [`ChangeSet`]. The building blocks the rollout state machine needs are public too:
//! [`Manager::live`] (one LIST per kind of everything the rollout owns, for statuses) and
//! [`Manager::stats`] (request counts, for tests and benchmarks). [`Manager::apply_named`]
//! applies objects outside any rollout (`install --apply`) with the same requests and checks.
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

pub mod applyset;
pub mod changes;
pub mod compare;
pub mod error;
pub mod lease;
pub mod named;
pub mod retry_after;

/// Readiness is a pure function of a live object: it lives with the rollout that decides on it.
pub use crate::rollout::readiness;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, Preconditions, PropagationPolicy,
};
use serde::Serialize;
use serde_json::Value;

pub use crate::manifest::consumer_volume_selector;
use crate::manifest::{self, FIELD_MANAGER, Kind, ObjectRef};
use crate::render::RenderedSet;

pub use applyset::ApplySet;
pub use changes::{Action, Change, ChangeSet, Summary};
pub use error::{ApiCause, ApplyError};
pub use lease::LeaseGuard;
pub use named::NamedObject;
pub use readiness::{Readiness, readiness};

/// The ApplySet parent is always applied with `force`, widening and narrowing alike, whatever
/// `--force-conflicts` says. The parent is snaproll's own bookkeeping (`read_parent` refuses one
/// another tool manages), and its annotations must record exactly what snaproll applies or a
/// later prune could miss members; a field manager left on it by a hand edit is no decision for
/// the user to make, and letting it block widening (or narrowing, after the deletes) would stop
/// every run. `--force-conflicts` is about the members, where another manager's fields are
/// someone's intent.
const PARENT_FORCE: bool = true;

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

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Bounded exponential backoff for transient failures (429, 5xx, timeouts): the one retry
/// budget of every request. kube's own retry layer is off in the clients snaproll builds
/// (`commands::cluster::client`), so `attempts` is the number of requests sent, and the
/// default gives up after 5 attempts and 0.2 + 0.4 + 0.8 + 1.6 = 3 s of backoff (plus each
/// attempt's own time, at most `request_timeout`). A server's `retryAfterSeconds` replaces the
/// backoff delay when longer, capped by `max_delay`.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
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

/// Options of [`Manager::prune`].
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

/// Options of [`Manager::wait`].
#[derive(Clone, Debug)]
pub struct WaitOptions {
    pub timeout: Duration,
    pub poll_interval: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
        }
    }
}

/// One poll of [`Manager::wait`]: how many objects are ready and what the others wait for.
#[derive(Clone, Debug, Serialize)]
pub struct WaitProgress {
    pub ready: usize,
    pub total: usize,
    pub pending: Vec<(String, String)>,
    pub elapsed_secs: u64,
}

/// Requests made by a [`Manager`], per verb. Every attempt counts, retries included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    pub lists: u64,
    pub gets: u64,
    /// Server-side apply PATCHes that wrote.
    pub applies: u64,
    /// Server-side apply PATCHes with `dryRun=All` (write nothing).
    pub dry_runs: u64,
    pub deletes: u64,
    /// GETs of the run's Lease (`coordination.k8s.io`), apart from the object reads.
    pub lease_reads: u64,
    /// Creates and updates of the run's Lease (take, renew, release): the run's lock, not a
    /// change to the rollout, so [`RequestCounts::writes`] leaves them out and a no-op run
    /// still makes zero object writes.
    pub lease_writes: u64,
    /// Attempts that were retries of a transient failure.
    pub retries: u64,
}

impl RequestCounts {
    /// Every request, Lease traffic included.
    pub fn total(&self) -> u64 {
        self.lists + self.gets + self.applies + self.dry_runs + self.deletes + self.lease()
    }

    /// Requests that change the rollout's objects (Lease traffic excluded).
    pub fn writes(&self) -> u64 {
        self.applies + self.deletes
    }

    /// Requests on the run's Lease.
    pub fn lease(&self) -> u64 {
        self.lease_reads + self.lease_writes
    }
}

#[derive(Default, Debug)]
struct Counters {
    lists: AtomicU64,
    gets: AtomicU64,
    applies: AtomicU64,
    dry_runs: AtomicU64,
    deletes: AtomicU64,
    lease_reads: AtomicU64,
    lease_writes: AtomicU64,
    retries: AtomicU64,
}

#[derive(Clone, Copy)]
enum Verb {
    List,
    Get,
    Apply,
    DryRun,
    Delete,
    LeaseRead,
    LeaseWrite,
}

/// The owned live objects of a rollout, read with one LIST per kind and namespace.
#[derive(Clone, Debug, Default)]
pub struct LiveState {
    /// Every object carrying the rollout's ownership labels, keyed by identity. Includes
    /// objects that are not ApplySet members (PVCs created by the StatefulSet controller).
    pub objects: BTreeMap<ObjectRef, Value>,
    /// The ApplySet parent, when it exists.
    pub parent: Option<Value>,
    /// What was read (a kind in a namespace, or a cluster-scoped object by name), so a later
    /// step of the same run reads only what is missing.
    read: BTreeSet<(Kind, String)>,
}

impl LiveState {
    pub fn get(&self, id: &ObjectRef) -> Option<&Value> {
        self.objects.get(id)
    }

    /// Live objects of one kind.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&ObjectRef, &Value)> {
        self.objects.iter().filter(move |(id, _)| id.kind == kind)
    }
}

/// How one desired object compares with the cluster.
#[derive(Clone, Debug)]
enum PlanState {
    Create,
    Update(String),
    Unchanged,
}

struct Planned<'a> {
    obj: &'a manifest::Object,
    desired: Value,
    state: PlanState,
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
    concurrency: usize,
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
            concurrency: 8,
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

    /// How many objects of one kind are applied or deleted at once.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The rollout's ApplySet (parent name, namespace, id).
    pub fn applyset(&self) -> &ApplySet {
        &self.set
    }

    /// Requests made so far (the counting hook for tests and benchmarks).
    pub fn stats(&self) -> RequestCounts {
        let c = &self.counters;
        RequestCounts {
            lists: c.lists.load(Ordering::Relaxed),
            gets: c.gets.load(Ordering::Relaxed),
            applies: c.applies.load(Ordering::Relaxed),
            dry_runs: c.dry_runs.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            lease_reads: c.lease_reads.load(Ordering::Relaxed),
            lease_writes: c.lease_writes.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    /// Resets the request counters.
    pub fn reset_stats(&self) {
        let c = &self.counters;
        for a in [
            &c.lists,
            &c.gets,
            &c.applies,
            &c.dry_runs,
            &c.deletes,
            &c.lease_reads,
            &c.lease_writes,
            &c.retries,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }

    fn count(&self, verb: Verb) {
        let c = &self.counters;
        match verb {
            Verb::List => &c.lists,
            Verb::Get => &c.gets,
            Verb::Apply => &c.applies,
            Verb::DryRun => &c.dry_runs,
            Verb::Delete => &c.deletes,
            Verb::LeaseRead => &c.lease_reads,
            Verb::LeaseWrite => &c.lease_writes,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Runs one request with the per-attempt timeout and retries transient failures, waiting
    /// the backoff delay or the server's `retryAfterSeconds` when longer (both capped by
    /// `max_delay`). The error is the last attempt's, with the number of attempts.
    async fn call<T, F, Fut>(&self, verb: Verb, mut f: F) -> Result<T, ApiCause>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.count(verb);
            if attempt > 1 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            let result = match tokio::time::timeout(self.request_timeout, f()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => ApiCause::from_kube(e),
                Err(_) => ApiCause::timeout(self.request_timeout),
            };
            let mut cause = result;
            if !cause.is_transient() || attempt >= self.retry.attempts.max(1) {
                cause.attempts = attempt;
                return Err(cause);
            }
            let backoff = self
                .retry
                .base_delay
                .saturating_mul(1 << (attempt - 1).min(16));
            let delay = backoff
                .max(cause.retry_after.unwrap_or_default())
                .min(self.retry.max_delay);
            tracing::debug!(attempt, ?delay, error = %cause, "transient API error, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    fn api(&self, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = api_resource(kind);
        match (kind.namespaced(), namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (true, None) => Api::namespaced_with(self.client.clone(), &self.namespace, &ar),
            (false, _) => Api::all_with(self.client.clone(), &ar),
        }
    }

    fn parent_api(&self) -> Api<DynamicObject> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("", "v1", "ConfigMap"),
            "configmaps",
        );
        Api::namespaced_with(self.client.clone(), &self.set.namespace, &ar)
    }

    /// Reads the ApplySet parent and every owned namespaced object: one GET, then one LIST
    /// per namespaced kind and namespace (the rollout's namespace, `extra_namespaces` and those
    /// the parent records), filtered by the ownership label selector. This is what the rollout
    /// reads statuses from (producer Pod phase, snapshot `readyToUse`, StatefulSet status).
    pub async fn live(&self, extra_namespaces: &BTreeSet<String>) -> Result<LiveState, ApplyError> {
        self.live_of(extra_namespaces, None, None).await
    }

    /// The live state a run over `set` needs: only the kinds `set` renders or the parent
    /// records (ApplySet semantics: the parent is widened before any member of a new kind is
    /// written), so a rollout using an existing snapshot class needs no cluster-wide RBAC.
    async fn live_for(&self, set: &RenderedSet) -> Result<LiveState, ApplyError> {
        self.live_of(&Self::namespaces_of(set), Some(set), None)
            .await
    }

    /// Reads the live state, skipping what `known` (read earlier this run) already holds.
    async fn live_of(
        &self,
        extra_namespaces: &BTreeSet<String>,
        set: Option<&RenderedSet>,
        known: Option<LiveState>,
    ) -> Result<LiveState, ApplyError> {
        let parent = match &known {
            Some(k) => k.parent.clone(),
            None => self.read_parent().await?,
        };
        let kinds: Vec<Kind> = match set {
            None => Kind::ALL.to_vec(),
            Some(set) => {
                let recorded = parent
                    .as_ref()
                    .map(|p| applyset::annotation_set(p, applyset::ANNOTATION_GROUP_KINDS))
                    .unwrap_or_default();
                Kind::ALL
                    .into_iter()
                    .filter(|k| {
                        recorded.contains(&k.group_kind())
                            || set.objects.iter().any(|o| o.id.kind == *k)
                    })
                    .collect()
            }
        };
        let mut namespaces: BTreeSet<String> = extra_namespaces.clone();
        namespaces.insert(self.namespace.clone());
        if let Some(p) = &parent {
            namespaces.extend(applyset::annotation_set(p, applyset::ANNOTATION_NAMESPACES));
        }
        let selector = manifest::rollout_selector(&self.rollout);
        // Namespaced kinds: one LIST per kind and namespace. Cluster-scoped ones (the
        // VolumeSnapshotClass): a GET of each rendered name, which RBAC can limit to those
        // names where a cluster-wide LIST could not be; they are therefore never pruned.
        let mut jobs: Vec<(Kind, Option<String>, Option<String>)> = Vec::new();
        for kind in kinds {
            if kind.namespaced() {
                for ns in &namespaces {
                    jobs.push((kind, Some(ns.clone()), None));
                }
            } else if let Some(set) = set {
                for o in set.objects.iter().filter(|o| o.id.kind == kind) {
                    jobs.push((kind, None, Some(o.id.name.clone())));
                }
            }
        }
        let mut state = known.unwrap_or_default();
        let key = |kind: Kind, ns: &Option<String>, name: &Option<String>| {
            (
                kind,
                ns.clone().or_else(|| name.clone()).unwrap_or_default(),
            )
        };
        jobs.retain(|(kind, ns, name)| !state.read.contains(&key(*kind, ns, name)));
        state
            .read
            .extend(jobs.iter().map(|(kind, ns, name)| key(*kind, ns, name)));
        let results = futures::stream::iter(jobs.into_iter().map(|(kind, ns, name)| {
            let selector = selector.clone();
            async move {
                let api = self.api(kind, ns.as_deref());
                let listed = match &name {
                    Some(name) => self
                        .call(Verb::Get, || api.get_opt(name))
                        .await
                        .map(|o| o.into_iter().collect::<Vec<_>>()),
                    None => {
                        let lp = ListParams::default().labels(&selector);
                        self.call(Verb::List, || api.list(&lp))
                            .await
                            .map(|l| l.items)
                    }
                };
                let items = listed.map_err(|source| {
                    if source.is_not_found() {
                        return ApplyError::NotServed {
                            kind: kind.as_str().to_string(),
                            api_version: kind.api_version().to_string(),
                            source,
                        };
                    }
                    ApplyError::List {
                        kind: kind.as_str().to_string(),
                        scope: match (&ns, &name) {
                            (Some(n), _) => format!("namespace {n}"),
                            (None, Some(name)) => format!("the cluster (name {name})"),
                            (None, None) => "the cluster".to_string(),
                        },
                        source,
                    }
                })?;
                Ok::<_, ApplyError>((kind, items))
            }
        }))
        .buffer_unordered(self.concurrency)
        .collect::<Vec<_>>()
        .await;
        let objects = &mut state.objects;
        for r in results {
            let (kind, items) = r?;
            for item in items {
                let mut v = serde_json::to_value(&item).unwrap_or(Value::Null);
                // LIST items come without apiVersion and kind from a real API server.
                v["apiVersion"] = Value::from(kind.api_version());
                v["kind"] = Value::from(kind.as_str());
                let id = ObjectRef::new(
                    kind,
                    item.metadata.namespace.as_deref(),
                    item.metadata.name.as_deref().unwrap_or_default(),
                );
                objects.insert(id, v);
            }
        }
        state.parent = parent;
        Ok(state)
    }

    async fn read_parent(&self) -> Result<Option<Value>, ApplyError> {
        let api = self.parent_api();
        let got = self
            .call(Verb::Get, || api.get_opt(&self.set.name))
            .await
            .map_err(|source| ApplyError::Parent {
                object: self.set.display(),
                source,
            })?;
        let Some(obj) = got else {
            return Ok(None);
        };
        let v = serde_json::to_value(&obj).unwrap_or(Value::Null);
        let labels = manifest::labels_of(&v);
        if labels.get(applyset::LABEL_ID) != Some(&self.set.id) {
            return Err(ApplyError::ForeignParent {
                object: self.set.display(),
                reason: format!("its {} label is not {}", applyset::LABEL_ID, self.set.id),
            });
        }
        let tooling = v
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(applyset::ANNOTATION_TOOLING))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !tooling.starts_with("snaproll/") {
            return Err(ApplyError::ForeignParent {
                object: self.set.display(),
                reason: format!("it is managed by `{tooling}`"),
            });
        }
        Ok(Some(v))
    }

    fn namespaces_of(set: &RenderedSet) -> BTreeSet<String> {
        set.objects
            .iter()
            .filter_map(|o| o.id.namespace.clone())
            .collect()
    }

    fn plan<'a>(&self, set: &'a RenderedSet, live: &LiveState) -> Vec<Planned<'a>> {
        set.objects
            .iter()
            .map(|obj| {
                let desired = compare::desired_for_apply(&obj.value, &self.set.id);
                let state = match live.get(&obj.id) {
                    None => PlanState::Create,
                    Some(l) => match compare::change_reason(&desired, l) {
                        Some(r) => PlanState::Update(r),
                        None => PlanState::Unchanged,
                    },
                };
                Planned {
                    obj,
                    desired,
                    state,
                }
            })
            .collect()
    }

    /// The parent to write before applying (`None`: unchanged): the union of what it
    /// records and what `set` needs, so a crash mid-run never leaves a member unrecorded.
    fn widened_parent(&self, set: &RenderedSet, live: &LiveState) -> Option<Value> {
        let mut kinds: BTreeSet<String> =
            set.objects.iter().map(|o| o.id.kind.group_kind()).collect();
        let mut namespaces = Self::namespaces_of(set);
        if let Some(p) = &live.parent {
            kinds.extend(applyset::annotation_set(
                p,
                applyset::ANNOTATION_GROUP_KINDS,
            ));
            namespaces.extend(applyset::annotation_set(p, applyset::ANNOTATION_NAMESPACES));
        }
        self.parent_if_changed(live.parent.as_ref(), &kinds, &namespaces)
    }

    fn parent_if_changed(
        &self,
        current: Option<&Value>,
        kinds: &BTreeSet<String>,
        namespaces: &BTreeSet<String>,
    ) -> Option<Value> {
        let desired = self.set.parent(&self.rollout, kinds, namespaces);
        match current {
            Some(cur) => {
                let same_meta = |key: &str| {
                    desired
                        .pointer(&format!("/metadata/{key}"))
                        .and_then(Value::as_object)
                        .is_some_and(|want| {
                            let have = cur.pointer(&format!("/metadata/{key}"));
                            want.iter()
                                .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
                        })
                };
                let extra_ns_gone = cur
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(applyset::ANNOTATION_NAMESPACES))
                    .is_some()
                    && desired
                        .pointer("/metadata/annotations")
                        .and_then(|a| a.get(applyset::ANNOTATION_NAMESPACES))
                        .is_none();
                (!(same_meta("labels") && same_meta("annotations")) || extra_ns_gone)
                    .then_some(desired)
            }
            None => Some(desired),
        }
    }

    async fn patch(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        body: &Value,
        force: bool,
        dry_run: bool,
    ) -> Result<Value, ApiCause> {
        let mut pp = PatchParams::apply(FIELD_MANAGER);
        if force {
            pp = pp.force();
        }
        if dry_run {
            pp = pp.dry_run();
        }
        let verb = if dry_run { Verb::DryRun } else { Verb::Apply };
        let patch = Patch::Apply(body);
        let obj = self.call(verb, || api.patch(name, &pp, &patch)).await?;
        Ok(serde_json::to_value(&obj).unwrap_or(Value::Null))
    }

    /// Turns a failed apply or dry-run into the most specific error.
    fn classify(
        &self,
        id: &ObjectRef,
        desired: &Value,
        live: Option<&Value>,
        cause: ApiCause,
        dry_run: bool,
    ) -> ApplyError {
        let object = id.to_string();
        if cause.is_immutable() && !cause.is_apply_conflict() {
            let mut fields = compare::differing_fields(id.kind, desired, live);
            if fields.is_empty() {
                fields = cause.fields.clone();
            }
            if fields.is_empty() {
                fields.push("(see the server's message)".to_string());
            }
            return ApplyError::Immutable {
                object,
                fields,
                source: cause,
            };
        }
        write_error(object, cause, dry_run)
    }

    /// Dry-runs every changed object (parent included), concurrently; the first failure in
    /// apply order is returned. Returns the server's answer per object (for diffs).
    async fn dry_run_all(
        &self,
        plan: &[Planned<'_>],
        live: &LiveState,
        parent: Option<&Value>,
        force: bool,
    ) -> Result<BTreeMap<usize, Value>, (Option<ObjectRef>, ApplyError)> {
        if let Some(p) = parent {
            let api = self.parent_api();
            self.patch(&api, &self.set.name, p, PARENT_FORCE, true)
                .await
                .map_err(|source| {
                    (
                        None,
                        ApplyError::Parent {
                            object: self.set.display(),
                            source,
                        },
                    )
                })?;
        }
        let jobs = plan
            .iter()
            .enumerate()
            .filter(|(_, p)| !matches!(p.state, PlanState::Unchanged))
            .map(|(i, p)| async move {
                let api = self.api(p.obj.id.kind, p.obj.id.namespace.as_deref());
                let r = self
                    .patch(&api, &p.obj.id.name, &p.desired, force, true)
                    .await;
                (i, r)
            });
        let mut results: Vec<(usize, Result<Value, ApiCause>)> = futures::stream::iter(jobs)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        results.sort_by_key(|(i, _)| *i);
        let mut out = BTreeMap::new();
        for (i, r) in results {
            match r {
                Ok(v) => {
                    out.insert(i, v);
                }
                Err(cause) => {
                    let p = &plan[i];
                    // Creating an object the labelled LIST did not see conflicts only with an
                    // object someone else made under the same name: never adopted.
                    let err = if matches!(p.state, PlanState::Create) && cause.is_apply_conflict() {
                        ApplyError::Foreign {
                            object: p.obj.id.to_string(),
                            reason: format!(
                                "made by {} without the rollout's labels",
                                cause.conflicting_managers().join(", ")
                            ),
                        }
                    } else {
                        self.classify(&p.obj.id, &p.desired, live.get(&p.obj.id), cause, true)
                    };
                    return Err((Some(p.obj.id.clone()), err));
                }
            }
        }
        Ok(out)
    }

    /// Refuses to write over an object that is not a member of the rollout's ApplySet: one in
    /// the live state (it carries the ownership labels) without this set's `part-of`, or one
    /// the labelled LIST did not see (a plain object with the same name) whose dry-run answer
    /// shows other field managers, i.e. it existed before. Costs no request.
    fn check_foreign(
        &self,
        plan: &[Planned<'_>],
        live: &LiveState,
        answers: &BTreeMap<usize, Value>,
    ) -> Option<(ObjectRef, ApplyError)> {
        for (i, p) in plan.iter().enumerate() {
            let reason = match (&p.state, live.get(&p.obj.id)) {
                (PlanState::Unchanged, _) => continue,
                (_, Some(l)) => {
                    let labels = manifest::labels_of(l);
                    let shared_class = p.obj.id.kind == Kind::VolumeSnapshotClass
                        && labels.get(manifest::LABEL_MANAGED_BY).map(String::as_str)
                            == Some(manifest::MANAGED_BY);
                    if shared_class || manifest::is_member(&labels, &self.rollout, &self.set.id) {
                        continue;
                    }
                    match labels.get(applyset::LABEL_PART_OF) {
                        Some(other) => format!("a member of another ApplySet, {other}"),
                        None if manifest::is_owned_by(&labels, &self.rollout) => format!(
                            "it carries the labels of rollout {} but is not a member of its ApplySet",
                            self.rollout
                        ),
                        None => match managers(l) {
                            m if m.is_empty() => "made without the rollout's labels".to_string(),
                            m => format!("made by {m} without the rollout's labels"),
                        },
                    }
                }
                (_, None) => match answers.get(&i).map(managers) {
                    Some(m) if !m.is_empty() => format!("made by {m} without the rollout's labels"),
                    _ => continue,
                },
            };
            return Some((
                p.obj.id.clone(),
                ApplyError::Foreign {
                    object: p.obj.id.to_string(),
                    reason,
                },
            ));
        }
        None
    }

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

    /// Applies `set` (see the module documentation for the steps), then prunes when
    /// `opts.prune`. On failure the partial change set comes with the error.
    pub async fn apply(
        &self,
        set: &RenderedSet,
        opts: &ApplyOptions,
    ) -> Result<ChangeSet, Box<Failed>> {
        self.apply_from(set, opts, None).await
    }

    /// [`Manager::apply`] on top of a live state read earlier in the same run (the rollout's
    /// observation from [`Manager::live`]): only what that read lacks is read again, so a
    /// reconcile makes at most one LIST per kind.
    pub async fn apply_from(
        &self,
        set: &RenderedSet,
        opts: &ApplyOptions,
        known: Option<LiveState>,
    ) -> Result<ChangeSet, Box<Failed>> {
        let mut changes = self.change_set(opts.dry_run);
        let fail = |changes: ChangeSet, error: ApplyError| {
            let mut changes = changes;
            changes.error = Some(error.to_string());
            Box::new(Failed { changes, error })
        };
        let live = match self
            .live_of(&Self::namespaces_of(set), Some(set), known)
            .await
        {
            Ok(l) => l,
            Err(e) => return Err(fail(changes, e)),
        };
        let plan = self.plan(set, &live);
        let parent = self.widened_parent(set, &live);

        // 3. Dry-run everything that will be written; nothing is written if any fails, or if
        // any of it would adopt an object that is not the rollout's.
        let checked = if opts.already_dry_run && !opts.dry_run {
            None
        } else {
            match self
                .dry_run_all(&plan, &live, parent.as_ref(), opts.force_conflicts)
                .await
            {
                Ok(answers) => self
                    .check_foreign(&plan, &live, &answers)
                    .map(|(id, e)| (Some(id), e)),
                Err(e) => Some(e),
            }
        };
        if let Some((id, err)) = checked {
            for p in &plan {
                let c = match (&p.state, id.as_ref() == Some(&p.obj.id)) {
                    (_, true) => Change::new(&p.obj.id, Action::Failed, Some(err.to_string())),
                    (PlanState::Unchanged, _) => unchanged(&p.obj.id),
                    _ => Change::new(
                        &p.obj.id,
                        Action::Skipped,
                        Some("not applied: the dry-run of another object failed".into()),
                    ),
                };
                changes.push(c);
            }
            return Err(fail(changes, err));
        }

        if opts.dry_run {
            if let Some(p) = &parent {
                changes.inventory = Some(self.inventory_change(
                    if live.parent.is_some() {
                        Action::Configured
                    } else {
                        Action::Created
                    },
                    Some(p),
                ));
            }
            for p in &plan {
                changes.push(planned_change(p));
            }
            if opts.prune {
                let popts = PruneOptions {
                    dry_run: true,
                    ..opts.prune_options.clone()
                };
                if let Err(f) = self.prune_into(set, &live, &popts, &mut changes).await {
                    return Err(fail(changes, f));
                }
            }
            return Ok(changes);
        }

        // 4. Widen the inventory, then apply kind by kind.
        let mut recorded = live.parent.clone();
        if let Some(p) = &parent {
            let api = self.parent_api();
            match self
                .patch(&api, &self.set.name, p, PARENT_FORCE, false)
                .await
            {
                Ok(v) => {
                    changes.inventory = Some(self.inventory_change(
                        if live.parent.is_some() {
                            Action::Configured
                        } else {
                            Action::Created
                        },
                        Some(&v),
                    ));
                    recorded = Some(v);
                }
                Err(source) => {
                    let err = ApplyError::Parent {
                        object: self.set.display(),
                        source,
                    };
                    for p in &plan {
                        changes.push(match p.state {
                            PlanState::Unchanged => unchanged(&p.obj.id),
                            _ => Change::new(
                                &p.obj.id,
                                Action::Skipped,
                                Some("not applied: the inventory could not be updated".into()),
                            ),
                        });
                    }
                    return Err(fail(changes, err));
                }
            }
        }
        let mut first_error: Option<ApplyError> = None;
        for kind in Kind::ALL {
            let idx: Vec<usize> = plan
                .iter()
                .enumerate()
                .filter(|(_, p)| p.obj.id.kind == kind)
                .map(|(i, _)| i)
                .collect();
            if first_error.is_some() {
                for i in idx {
                    let p = &plan[i];
                    changes.push(match p.state {
                        PlanState::Unchanged => unchanged(&p.obj.id),
                        _ => Change::new(
                            &p.obj.id,
                            Action::Skipped,
                            Some("not applied: an earlier apply failed".into()),
                        ),
                    });
                }
                continue;
            }
            let jobs = idx.iter().map(|&i| {
                let p = &plan[i];
                async move {
                    if matches!(p.state, PlanState::Unchanged) {
                        return (i, Ok(()));
                    }
                    let api = self.api(p.obj.id.kind, p.obj.id.namespace.as_deref());
                    let r = self
                        .patch(
                            &api,
                            &p.obj.id.name,
                            &p.desired,
                            opts.force_conflicts,
                            false,
                        )
                        .await
                        .map(|_| ());
                    (i, r)
                }
            });
            let mut results: Vec<(usize, Result<(), ApiCause>)> = futures::stream::iter(jobs)
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            results.sort_by_key(|(i, _)| *i);
            for (i, r) in results {
                let p = &plan[i];
                match r {
                    Ok(()) => changes.push(planned_change(p)),
                    Err(cause) => {
                        let err =
                            self.classify(&p.obj.id, &p.desired, live.get(&p.obj.id), cause, false);
                        changes.push(Change::new(
                            &p.obj.id,
                            Action::Failed,
                            Some(err.to_string()),
                        ));
                        if first_error.is_none() {
                            first_error = Some(err);
                        }
                    }
                }
            }
        }
        if let Some(err) = first_error {
            return Err(fail(changes, err));
        }

        // 5. Prune only after every apply succeeded.
        if opts.prune {
            let live = LiveState {
                parent: recorded,
                ..live
            };
            if let Err(e) = self
                .prune_into(set, &live, &opts.prune_options, &mut changes)
                .await
            {
                return Err(fail(changes, e));
            }
        }
        Ok(changes)
    }

    /// What `apply` would change, with a unified diff per changed object (from the server's
    /// dry-run answer, so defaults and other managers' fields show as they would be).
    pub async fn diff(
        &self,
        set: &RenderedSet,
        opts: &DiffOptions,
    ) -> Result<ChangeSet, Box<Failed>> {
        self.diff_from(set, opts, None).await
    }

    /// [`Manager::diff`] on top of a live state read earlier in the same run, like
    /// [`Manager::apply_from`].
    pub async fn diff_from(
        &self,
        set: &RenderedSet,
        opts: &DiffOptions,
        known: Option<LiveState>,
    ) -> Result<ChangeSet, Box<Failed>> {
        let mut changes = self.change_set(true);
        let fail = |mut changes: ChangeSet, error: ApplyError| {
            changes.error = Some(error.to_string());
            Box::new(Failed { changes, error })
        };
        let live = match self
            .live_of(&Self::namespaces_of(set), Some(set), known)
            .await
        {
            Ok(l) => l,
            Err(e) => return Err(fail(changes, e)),
        };
        let plan = self.plan(set, &live);
        if let Some(p) = self.widened_parent(set, &live) {
            changes.inventory = Some(self.inventory_change(
                if live.parent.is_some() {
                    Action::Configured
                } else {
                    Action::Created
                },
                Some(&p),
            ));
        }
        let jobs = plan
            .iter()
            .enumerate()
            .filter(|(_, p)| !matches!(p.state, PlanState::Unchanged))
            .map(|(i, p)| async move {
                let api = self.api(p.obj.id.kind, p.obj.id.namespace.as_deref());
                (
                    i,
                    self.patch(&api, &p.obj.id.name, &p.desired, opts.force_conflicts, true)
                        .await,
                )
            });
        let mut results: BTreeMap<usize, Result<Value, ApiCause>> = futures::stream::iter(jobs)
            .buffer_unordered(self.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect();
        let mut first_error = None;
        for (i, p) in plan.iter().enumerate() {
            let mut c = planned_change(p);
            match results.remove(&i) {
                None => {}
                Some(Ok(merged)) => {
                    let title = object_title(&p.obj.id);
                    c.diff = Some(compare::unified_diff(
                        &title,
                        live.get(&p.obj.id),
                        Some(&merged),
                        opts.color,
                    ));
                }
                Some(Err(cause)) => {
                    let err =
                        self.classify(&p.obj.id, &p.desired, live.get(&p.obj.id), cause, true);
                    c = Change::new(&p.obj.id, Action::Failed, Some(err.to_string()));
                    first_error.get_or_insert(err);
                }
            }
            changes.push(c);
        }
        if opts.prune {
            let popts = PruneOptions {
                dry_run: true,
                ..PruneOptions::default()
            };
            let before = changes.changes.len();
            if let Err(e) = self.prune_into(set, &live, &popts, &mut changes).await {
                first_error.get_or_insert(e);
            }
            for c in changes.changes[before..].iter_mut() {
                if c.action == Action::Deleted
                    && let Some(k) = Kind::from_kind(&c.kind)
                {
                    let id = ObjectRef::new(k, c.namespace.as_deref(), &c.name);
                    c.diff = Some(compare::unified_diff(
                        &object_title(&id),
                        live.get(&id),
                        None,
                        opts.color,
                    ));
                }
            }
        }
        match first_error {
            Some(e) => Err(fail(changes, e)),
            None => Ok(changes),
        }
    }

    /// Prunes owned ApplySet members that `set` no longer renders, with every guard, and the
    /// consumer PVCs of StatefulSets that are gone (found by label on every prune, so a failed
    /// delete is retried; see docs/apply.md for those left to the retention policy), then
    /// narrows the inventory. Reads the live state itself; [`Manager::apply`] with
    /// `prune: true` reuses the state it already read instead.
    pub async fn prune(
        &self,
        set: &RenderedSet,
        opts: &PruneOptions,
    ) -> Result<ChangeSet, Box<Failed>> {
        let mut changes = self.change_set(opts.dry_run);
        let result = match self.live_for(set).await {
            Ok(live) => self.prune_into(set, &live, opts, &mut changes).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(changes),
            Err(error) => {
                changes.error = Some(error.to_string());
                Err(Box::new(Failed { changes, error }))
            }
        }
    }

    async fn prune_into(
        &self,
        set: &RenderedSet,
        live: &LiveState,
        opts: &PruneOptions,
        changes: &mut ChangeSet,
    ) -> Result<(), ApplyError> {
        let plan = plan_prune(&self.rollout, &self.set.id, set, live, opts);
        for (id, reason) in &plan.skipped {
            changes.push(Change::new(id, Action::Skipped, Some(reason.clone())));
        }
        // Consumer PVCs are not ApplySet members (the StatefulSet controller makes them), so
        // they are found by label on every prune, not only in the run that deletes their
        // StatefulSet: a delete that failed, or a run that stopped in between, is retried.
        let claims = if set.objects.is_empty() {
            Vec::new()
        } else {
            self.consumer_claims(live).await?
        };
        let rendered_sts: BTreeSet<(String, String)> = set
            .objects
            .iter()
            .filter(|o| o.id.kind == Kind::StatefulSet)
            .filter_map(|o| Some((o.dataset.clone()?, o.generation.clone()?)))
            .collect();
        let claim_of_gone_sts = |gone: &BTreeSet<ObjectRef>, v: &Value| {
            let Some(key) = generation_key(v) else {
                return false;
            };
            !rendered_sts.contains(&key)
                && !live
                    .of_kind(Kind::StatefulSet)
                    .any(|(sid, s)| !gone.contains(sid) && generation_key(s) == Some(key.clone()))
        };
        let nothing_to_delete = plan.deletes.is_empty()
            && plan.skipped.is_empty()
            && !claims
                .iter()
                .any(|(_, v)| claim_of_gone_sts(&BTreeSet::new(), v));
        if nothing_to_delete {
            // Nothing to delete: still narrow a parent that records kinds no longer present.
            return self
                .narrow(set, live, &BTreeSet::new(), opts.dry_run, changes)
                .await;
        }
        let mut first_error: Option<ApplyError> = None;
        let mut survivors: BTreeSet<ObjectRef> =
            plan.skipped.iter().map(|(id, _)| id.clone()).collect();
        let mut deleted_statefulsets: BTreeSet<ObjectRef> = BTreeSet::new();
        let mut deleted_claims: BTreeSet<ObjectRef> = BTreeSet::new();
        // Phases in delete order: StatefulSets, their PVCs, snapshots, then the rest.
        let mut phases: Vec<Vec<ObjectRef>> = vec![Vec::new(); 4];
        for id in &plan.deletes {
            let phase = match id.kind {
                Kind::StatefulSet => 0,
                Kind::VolumeSnapshot => 2,
                _ => 3,
            };
            phases[phase].push(id.clone());
        }
        for (n, phase) in phases.into_iter().enumerate() {
            if n == 1 {
                // Claims whose StatefulSet is gone (deleted now or in an earlier run), one at
                // a time so they go in a stable order.
                for (id, v) in &claims {
                    if !claim_of_gone_sts(&deleted_statefulsets, v) {
                        continue;
                    }
                    if let Some(reason) = opts.keep.get(id) {
                        changes.push(Change::new(id, Action::Skipped, Some(reason.clone())));
                        continue;
                    }
                    if let Some(reason) = claim_left_to_cluster(v, live, &deleted_statefulsets) {
                        changes.push(Change::new(id, Action::Skipped, Some(reason)));
                        continue;
                    }
                    let (d, g) = generation_key(v).unwrap_or_default();
                    let reason = format!(
                        "volume of generation {g} of dataset {d}, whose StatefulSet is gone"
                    );
                    if opts.dry_run {
                        changes.push(Change::new(id, Action::Deleted, Some(reason)));
                        deleted_claims.insert(id.clone());
                        continue;
                    }
                    let uid = v
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    match self.delete(id, uid).await {
                        Ok(()) => {
                            changes.push(Change::new(id, Action::Deleted, Some(reason)));
                            deleted_claims.insert(id.clone());
                        }
                        Err(source) => {
                            let e = ApplyError::Delete {
                                object: id.to_string(),
                                source,
                            };
                            changes.push(Change::new(id, Action::Failed, Some(e.to_string())));
                            first_error.get_or_insert(e);
                        }
                    }
                }
                continue;
            }
            let jobs = phase.into_iter().map(|id| {
                let keep_reason = (id.kind == Kind::VolumeSnapshot)
                    .then(|| {
                        snapshot_hold(&id, live, &deleted_statefulsets, &claims, &deleted_claims)
                    })
                    .flatten();
                async move {
                    if let Some(reason) = keep_reason {
                        return (id, Deletion::Kept(reason));
                    }
                    if opts.dry_run {
                        return (id, Deletion::Deleted);
                    }
                    let uid = live
                        .get(&id)
                        .and_then(|v| v.pointer("/metadata/uid"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let r = self.delete(&id, uid).await;
                    (
                        id,
                        match r {
                            Ok(()) => Deletion::Deleted,
                            Err(c) => Deletion::Failed(c),
                        },
                    )
                }
            });
            let mut results: Vec<(ObjectRef, Deletion)> = futures::stream::iter(jobs)
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            results.sort_by(|a, b| a.0.cmp(&b.0));
            for (id, r) in results {
                match r {
                    Deletion::Deleted => {
                        if id.kind == Kind::StatefulSet {
                            deleted_statefulsets.insert(id.clone());
                        }
                        changes.push(Change::new(
                            &id,
                            Action::Deleted,
                            Some("no longer rendered".into()),
                        ));
                    }
                    Deletion::Kept(reason) => {
                        survivors.insert(id.clone());
                        changes.push(Change::new(&id, Action::Skipped, Some(reason)));
                    }
                    Deletion::Failed(source) => {
                        survivors.insert(id.clone());
                        let e = ApplyError::Delete {
                            object: id.to_string(),
                            source,
                        };
                        changes.push(Change::new(&id, Action::Failed, Some(e.to_string())));
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        self.narrow(set, live, &survivors, opts.dry_run, changes)
            .await?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every owned consumer PVC (label `app.kubernetes.io/component=consumer-volume`), from
    /// the live state, plus one LIST per namespace whose PVCs this run has not read yet
    /// (a set that no longer renders a PVC of its own).
    async fn consumer_claims(
        &self,
        live: &LiveState,
    ) -> Result<Vec<(ObjectRef, Value)>, ApplyError> {
        let mut namespaces: BTreeSet<String> = live
            .read
            .iter()
            .filter(|(k, _)| k.namespaced())
            .map(|(_, ns)| ns.clone())
            .collect();
        namespaces.insert(self.namespace.clone());
        let mut out: BTreeMap<ObjectRef, Value> = live
            .of_kind(Kind::PersistentVolumeClaim)
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect();
        let selector = manifest::rollout_selector(&self.rollout);
        for ns in namespaces {
            if live
                .read
                .contains(&(Kind::PersistentVolumeClaim, ns.clone()))
            {
                continue;
            }
            let api = self.api(Kind::PersistentVolumeClaim, Some(&ns));
            let lp = ListParams::default().labels(&selector);
            let list = self
                .call(Verb::List, || api.list(&lp))
                .await
                .map_err(|source| ApplyError::List {
                    kind: Kind::PersistentVolumeClaim.as_str().to_string(),
                    scope: format!("namespace {ns}"),
                    source,
                })?;
            for item in list.items {
                let mut v = serde_json::to_value(&item).unwrap_or(Value::Null);
                v["apiVersion"] = Value::from("v1");
                v["kind"] = Value::from(Kind::PersistentVolumeClaim.as_str());
                let id = ObjectRef::new(
                    Kind::PersistentVolumeClaim,
                    item.metadata.namespace.as_deref(),
                    item.metadata.name.as_deref().unwrap_or_default(),
                );
                out.insert(id, v);
            }
        }
        Ok(out
            .into_iter()
            .filter(|(_, v)| {
                let l = manifest::labels_of(v);
                manifest::is_member(&l, &self.rollout, &self.set.id)
                    && l.get(manifest::LABEL_COMPONENT).map(String::as_str)
                        == Some("consumer-volume")
            })
            .collect())
    }

    /// Narrows the parent to the kinds still present: rendered ones and members that
    /// survived the prune (kept by a guard or failed to delete, so the next run finds them).
    async fn narrow(
        &self,
        set: &RenderedSet,
        live: &LiveState,
        survivors: &BTreeSet<ObjectRef>,
        dry_run: bool,
        changes: &mut ChangeSet,
    ) -> Result<(), ApplyError> {
        if set.objects.is_empty() {
            return Ok(());
        }
        let mut kinds: BTreeSet<String> =
            set.objects.iter().map(|o| o.id.kind.group_kind()).collect();
        kinds.extend(survivors.iter().map(|id| id.kind.group_kind()));
        // Cluster-scoped members are never pruned, so their kind stays recorded.
        if let Some(p) = &live.parent {
            let recorded = applyset::annotation_set(p, applyset::ANNOTATION_GROUP_KINDS);
            kinds.extend(
                Kind::ALL
                    .into_iter()
                    .filter(|k| !k.namespaced())
                    .map(Kind::group_kind)
                    .filter(|gk| recorded.contains(gk)),
            );
        }
        let mut namespaces = Self::namespaces_of(set);
        namespaces.extend(survivors.iter().filter_map(|id| id.namespace.clone()));
        let Some(p) = self.parent_if_changed(live.parent.as_ref(), &kinds, &namespaces) else {
            return Ok(());
        };
        let action = if live.parent.is_some() {
            Action::Configured
        } else {
            Action::Created
        };
        if !dry_run {
            let api = self.parent_api();
            self.patch(&api, &self.set.name, &p, PARENT_FORCE, false)
                .await
                .map_err(|source| ApplyError::Parent {
                    object: self.set.display(),
                    source,
                })?;
        }
        changes.inventory = Some(self.inventory_change(action, Some(&p)));
        Ok(())
    }

    async fn delete(&self, id: &ObjectRef, uid: Option<String>) -> Result<(), ApiCause> {
        let api = self.api(id.kind, id.namespace.as_deref());
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            // Delete exactly the object the guards looked at, not a namesake created since.
            preconditions: uid.map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.call(Verb::Delete, || api.delete(&id.name, &dp)).await {
            Ok(_) => Ok(()),
            Err(c) if c.is_not_found() => Ok(()),
            Err(c) => Err(c),
        }
    }

    /// Polls (one LIST per kind involved) until every object in `ids` is ready by the
    /// per-kind rules of [`readiness`], one is failed, or the timeout passes.
    /// `progress` is called after every poll.
    pub async fn wait(
        &self,
        ids: &[ObjectRef],
        opts: &WaitOptions,
        progress: &mut dyn FnMut(&WaitProgress),
    ) -> Result<ChangeSet, ApplyError> {
        let start = Instant::now();
        let namespaces: BTreeSet<String> = ids.iter().filter_map(|i| i.namespace.clone()).collect();
        loop {
            let live = self.live(&namespaces).await?;
            let mut pending = Vec::new();
            let mut ready = 0;
            for id in ids {
                match live.get(id).map(|v| readiness(id.kind, v)) {
                    Some(Readiness::Ready) => ready += 1,
                    Some(Readiness::Failed(reason)) => {
                        return Err(ApplyError::WaitFailed {
                            object: id.to_string(),
                            reason,
                        });
                    }
                    Some(Readiness::Pending(r)) => pending.push((id.to_string(), r)),
                    None => pending.push((id.to_string(), "does not exist".to_string())),
                }
            }
            progress(&WaitProgress {
                ready,
                total: ids.len(),
                pending: pending.clone(),
                elapsed_secs: start.elapsed().as_secs(),
            });
            if pending.is_empty() {
                let mut cs = self.change_set(false);
                for id in ids {
                    cs.push(Change::new(id, Action::Unchanged, Some("ready".into())));
                }
                return Ok(cs);
            }
            if start.elapsed() + opts.poll_interval > opts.timeout {
                return Err(ApplyError::WaitTimeout {
                    seconds: opts.timeout.as_secs(),
                    pending: pending
                        .iter()
                        .map(|(o, r)| format!("{o} ({r})"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            tokio::time::sleep(opts.poll_interval).await;
        }
    }
}

/// What became of one prune candidate.
enum Deletion {
    Deleted,
    /// Kept by a guard checked at delete time, with the reason.
    Kept(String),
    Failed(ApiCause),
}

fn planned_change(p: &Planned<'_>) -> Change {
    match &p.state {
        PlanState::Create => Change::new(
            &p.obj.id,
            Action::Created,
            Some("not in the cluster".to_string()),
        ),
        PlanState::Update(r) => Change::new(&p.obj.id, Action::Configured, Some(r.clone())),
        PlanState::Unchanged => unchanged(&p.obj.id),
    }
}

/// An unchanged object's entry: every entry of a change set says why (for `-o json`).
fn unchanged(id: &ObjectRef) -> Change {
    Change::new(
        id,
        Action::Unchanged,
        Some("every field snaproll sets already has the desired value".to_string()),
    )
}

/// `kind.group/namespace/name` for diff headers.
fn object_title(id: &ObjectRef) -> String {
    let kind = id.kind.group_kind();
    match &id.namespace {
        Some(ns) => format!("{kind}/{ns}/{}", id.name),
        None => format!("{kind}/{}", id.name),
    }
}

/// The `ApiResource` of a snaproll kind (no discovery request needed).
pub fn api_resource(kind: Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(kind.group(), kind.version(), kind.as_str()),
        kind.plural(),
    )
}

/// A failed apply or dry-run as a conflict (with the managers and fields) or a plain write error;
/// shared by the rollout's apply and `apply_named`.
fn write_error(object: String, cause: ApiCause, dry_run: bool) -> ApplyError {
    if cause.is_apply_conflict() {
        let mut fields = cause.fields.clone();
        if fields.is_empty() {
            fields = conflict_fields(&cause.message);
        }
        return ApplyError::Conflict {
            object,
            managers: cause.conflicting_managers(),
            fields,
            source: cause,
        };
    }
    if dry_run {
        ApplyError::DryRun {
            object,
            source: cause,
        }
    } else {
        ApplyError::Apply {
            object,
            source: cause,
        }
    }
}

/// The (dataset, generation) labels of an object.
fn generation_key(v: &Value) -> Option<(String, String)> {
    let l = manifest::labels_of(v);
    Some((
        l.get(manifest::LABEL_DATASET)?.clone(),
        l.get(manifest::LABEL_GENERATION)?.clone(),
    ))
}

/// Why a claim whose StatefulSet is gone is not deleted by snaproll (`None`: it is). The
/// cluster removes it when its StatefulSet's `persistentVolumeClaimRetentionPolicy` says
/// `whenDeleted: Delete` and the server honours it: the live StatefulSet deleted this run
/// kept the field (servers that do not know it drop it), or the claim carries the
/// StatefulSet owner reference the controller sets for the garbage collector. A claim left
/// a run later without that reference is deleted: nothing else will.
fn claim_left_to_cluster(
    claim: &Value,
    live: &LiveState,
    deleted_statefulsets: &BTreeSet<ObjectRef>,
) -> Option<String> {
    if claim.pointer("/metadata/deletionTimestamp").is_some() {
        return Some("already being deleted (a finalizer holds it); its snapshot waits".into());
    }
    let gc = "deleted with its StatefulSet by the cluster (persistentVolumeClaimRetentionPolicy whenDeleted: Delete); its snapshot waits";
    let owned_by_sts = claim
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|o| {
            o.iter()
                .any(|r| r.get("kind").and_then(Value::as_str) == Some("StatefulSet"))
        });
    let key = generation_key(claim);
    let policy_deletes = deleted_statefulsets.iter().any(|sid| {
        live.get(sid)
            .is_some_and(|s| generation_key(s) == key && retention_deletes_claims(s))
    });
    (owned_by_sts || policy_deletes).then(|| gc.to_string())
}

/// Why a pruned snapshot must stay (`None`: it may go): a surviving StatefulSet restores
/// from it, or a surviving claim of its generation does (a StatefulSet recreates lost claims
/// from the snapshot, and a claim being restored needs it).
fn snapshot_hold(
    snap: &ObjectRef,
    live: &LiveState,
    deleted_statefulsets: &BTreeSet<ObjectRef>,
    claims: &[(ObjectRef, Value)],
    deleted_claims: &BTreeSet<ObjectRef>,
) -> Option<String> {
    if let Some((sid, _)) = live
        .of_kind(Kind::StatefulSet)
        .filter(|(sid, _)| !deleted_statefulsets.contains(*sid))
        .find(|(_, s)| snapshot_of(s).as_deref() == Some(snap.name.as_str()))
    {
        return Some(format!("still the data source of {sid}"));
    }
    let key = live.get(snap).and_then(generation_key);
    let remaining: Vec<&ObjectRef> = claims
        .iter()
        .filter(|(id, _)| !deleted_claims.contains(id) && id.namespace == snap.namespace)
        .filter(|(_, c)| {
            let source = ["/spec/dataSource", "/spec/dataSourceRef"].iter().any(|p| {
                c.pointer(p).is_some_and(|ds| {
                    ds.get("kind").and_then(Value::as_str) == Some("VolumeSnapshot")
                        && ds.get("name").and_then(Value::as_str) == Some(snap.name.as_str())
                })
            });
            source || (key.is_some() && generation_key(c) == key)
        })
        .map(|(id, _)| id)
        .collect();
    let first = remaining.first()?;
    Some(match remaining.len() {
        1 => format!("{first} restored from it still exists; deleted once it is gone"),
        n => format!(
            "{first} and {} more claims restored from it still exist; deleted once they are gone",
            n - 1
        ),
    })
}

/// Whether a live StatefulSet's retention policy already deletes its PVCs with it.
fn retention_deletes_claims(sts: &Value) -> bool {
    sts.pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted")
        .and_then(Value::as_str)
        == Some("Delete")
}

/// The VolumeSnapshot a StatefulSet's claims restore from.
fn snapshot_of(sts: &Value) -> Option<String> {
    sts.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)?
        .iter()
        .find_map(|t| {
            let ds = t.pointer("/spec/dataSource")?;
            (ds.get("kind").and_then(Value::as_str) == Some("VolumeSnapshot"))
                .then(|| ds.get("name").and_then(Value::as_str).map(str::to_string))
                .flatten()
        })
}

/// Field paths of a conflict message (`... using apps/v1: .spec.replicas, conflict with ...`).
fn conflict_fields(message: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in message.split("conflict with \"").skip(1) {
        if let Some(i) = part.find(": ") {
            let rest = &part[i + 2..];
            let field = rest.split([',', ' ']).next().unwrap_or_default();
            if field.starts_with('.') && !out.contains(&field.to_string()) {
                out.push(field.to_string());
            }
        }
    }
    out
}

/// What a prune would do before any request: deletions in delete order and guarded objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PrunePlan {
    /// Objects to delete, StatefulSets first, then snapshots, then the rest in reverse
    /// dependency order.
    pub deletes: Vec<ObjectRef>,
    /// Candidates a guard keeps, with the guard's reason.
    pub skipped: Vec<(ObjectRef, String)>,
}

/// The field managers of `v` other than snaproll's, comma-separated (empty: none).
fn managers(v: &Value) -> String {
    let others: BTreeSet<&str> = v
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("manager").and_then(Value::as_str))
        .filter(|m| *m != FIELD_MANAGER)
        .collect();
    others.into_iter().collect::<Vec<_>>().join(", ")
}

/// Whether snaproll's field manager applied `v`: an `Apply` entry of manager `snaproll` in its
/// `managedFields`. An object without `managedFields` (servers that omit them) passes; the
/// StatefulSet controller's claims are never prune candidates (they have no `part-of`).
fn applied_by_snaproll(v: &Value) -> bool {
    match v
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    {
        None => true,
        Some(entries) => entries.iter().any(|m| {
            m.get("manager").and_then(Value::as_str) == Some(FIELD_MANAGER)
                && m.get("operation").and_then(Value::as_str) == Some("Apply")
        }),
    }
}

/// Decides what to prune. Candidates are live objects carrying this ApplySet's `part-of`
/// label that `set` does not render (namespaced kinds only: the engine reads cluster-scoped
/// VolumeSnapshotClasses by name and never prunes them, since old snapshots may still need
/// their class to be deleted). Guards: an empty `set` prunes nothing; an object
/// without the rollout's ownership labels is never deleted; a dataset's last ready
/// StatefulSet is kept while no rendered StatefulSet of that dataset is ready; objects in
/// `opts.keep` are kept.
pub fn plan_prune(
    rollout: &str,
    applyset_id: &str,
    set: &RenderedSet,
    live: &LiveState,
    opts: &PruneOptions,
) -> PrunePlan {
    let rendered: BTreeSet<&ObjectRef> = set.objects.iter().map(|o| &o.id).collect();
    let mut plan = PrunePlan::default();
    let candidates: Vec<(&ObjectRef, &Value)> = live
        .objects
        .iter()
        .filter(|(id, v)| {
            let labels = manifest::labels_of(v);
            // Claims the StatefulSet controller made carry the membership label from their
            // claim template; they go with their StatefulSet (see `consumer_claims`).
            id.kind.namespaced()
                && !rendered.contains(id)
                && labels.get(applyset::LABEL_PART_OF).map(String::as_str) == Some(applyset_id)
                && labels.get(manifest::LABEL_COMPONENT).map(String::as_str)
                    != Some("consumer-volume")
        })
        .collect();
    if set.objects.is_empty() {
        for (id, _) in candidates {
            plan.skipped.push((
                id.clone(),
                "the rendered set is empty; prune never runs on an empty set".into(),
            ));
        }
        return plan;
    }
    // Datasets with a rendered StatefulSet that is already ready.
    let ready_rendered: BTreeSet<String> = set
        .objects
        .iter()
        .filter(|o| o.id.kind == Kind::StatefulSet)
        .filter(|o| {
            live.get(&o.id)
                .is_some_and(|v| readiness(Kind::StatefulSet, v).is_ready())
        })
        .filter_map(|o| o.dataset.clone())
        .collect();
    let mut deletes = Vec::new();
    for (id, v) in candidates {
        let labels = manifest::labels_of(v);
        if !manifest::is_owned_by(&labels, rollout) {
            plan.skipped.push((
                id.clone(),
                format!("lacks the ownership labels of rollout {rollout}; never deleted"),
            ));
            continue;
        }
        if let Some(reason) = opts.keep.get(id) {
            plan.skipped.push((id.clone(), reason.clone()));
            continue;
        }
        if !applied_by_snaproll(v) {
            plan.skipped.push((
                id.clone(),
                format!("never applied by field manager {FIELD_MANAGER}; never deleted"),
            ));
            continue;
        }
        if v.pointer("/metadata/deletionTimestamp").is_some() {
            // A finalizer holds it: deleting it again every run would be a write per run.
            plan.skipped.push((
                id.clone(),
                "already being deleted (a finalizer holds it)".into(),
            ));
            continue;
        }
        if opts.keep_last_ready
            && id.kind == Kind::StatefulSet
            && readiness(Kind::StatefulSet, v).is_ready()
            && let Some(d) = labels.get(manifest::LABEL_DATASET)
            && !ready_rendered.contains(d)
            && !opts.removed_datasets.contains(d)
        {
            plan.skipped.push((
                id.clone(),
                format!("last ready generation of dataset {d}; kept until a rendered generation is ready"),
            ));
            continue;
        }
        deletes.push(id.clone());
    }
    // Delete order: StatefulSets, snapshots, then the rest in reverse dependency order.
    let rank = |k: Kind| match k {
        Kind::StatefulSet => 0,
        Kind::VolumeSnapshot => 1,
        other => 10 + (Kind::ALL.len() - other.order()),
    };
    deletes.sort_by(|a, b| rank(a.kind).cmp(&rank(b.kind)).then(a.cmp(b)));
    plan.deletes = deletes;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_never_deletes_again_an_object_already_being_deleted() {
        let labels = serde_json::json!({"applyset.kubernetes.io/part-of": "set",
            "app.kubernetes.io/managed-by": "snaproll", "snaproll.dev/rollout": "demo"});
        let svc = ObjectRef::new(Kind::Service, Some("default"), "consumer");
        let set = RenderedSet {
            objects: vec![manifest::Object {
                id: svc.clone(),
                dataset: None,
                generation: None,
                value: serde_json::json!({}),
                yaml: String::new(),
            }],
        };
        let mut live = LiveState::default();
        let pod = |name: &str, terminating: bool| {
            let mut v = serde_json::json!({"metadata": {"name": name, "labels": labels}});
            if terminating {
                v["metadata"]["deletionTimestamp"] = "2021-07-16T05:00:00Z".into();
                v["metadata"]["finalizers"] = serde_json::json!(["example.com/hold"]);
            }
            v
        };
        let stuck = ObjectRef::new(Kind::Pod, Some("default"), "stuck");
        let old = ObjectRef::new(Kind::Pod, Some("default"), "old");
        live.objects.insert(stuck.clone(), pod("stuck", true));
        live.objects.insert(old.clone(), pod("old", false));
        let plan = plan_prune("demo", "set", &set, &live, &PruneOptions::default());
        assert_eq!(plan.deletes, vec![old]);
        assert_eq!(
            plan.skipped,
            vec![(
                stuck,
                "already being deleted (a finalizer holds it)".to_string()
            )]
        );
    }

    #[test]
    fn conflict_fields_are_parsed_from_the_message() {
        let m = "Apply failed with 2 conflicts: conflict with \"kubectl\" using apps/v1: .spec.replicas, conflict with \"hpa\" using apps/v1: .spec.template";
        assert_eq!(conflict_fields(m), vec![".spec.replicas", ".spec.template"]);
        assert!(
            conflict_fields("Apply failed with 1 conflict: conflict with \"x\" using v1")
                .is_empty()
        );
    }

    #[test]
    fn consumer_volume_selector_scopes_to_one_generation() {
        assert_eq!(
            consumer_volume_selector("demo", "data", "2021-07-15"),
            "app.kubernetes.io/managed-by=snaproll,snaproll.dev/rollout=demo,snaproll.dev/dataset=data,snaproll.dev/generation=2021-07-15,app.kubernetes.io/component=consumer-volume"
        );
    }
}
