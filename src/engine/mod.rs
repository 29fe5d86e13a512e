//! The one engine behind every command that writes the cluster or Git (and `status` and `diff`,
//! which only observe): observe (the cluster, or Git without one) → decide
//! ([`crate::rollout`]) → render exactly the decided parts → commit (when a repository is
//! given) → apply → prune. Commands turn flags into [`Options`] and print the [`Report`].
//!
//! What keeps a run safe is decided here, once, for every path:
//! - a run that writes the cluster holds the rollout's Lease from before it observes until it
//!   ends, so two runs never act on the same state (see [`crate::apply::lease`]);
//! - a commit decided from a state the branch no longer has (another run moved it) is never
//!   published: the run observes and decides again from the new head;
//! - only members of the rollout's ApplySet are the rollout's objects
//!   ([`observe_members`]); the decision never starts a generation older than
//!   the newest that exists ([`crate::rollout::decide`]);
//! - `apply` applies what the rollout decided, so a snapshot is never created before its
//!   producer succeeded, nor a StatefulSet before its snapshot is ready.
//!
//! The engine owns the run's async runtime, cluster client and Lease across `--wait` polls.
//!
//! Files: this one (options, report, errors, the step); `observe` (the cluster's or Git's
//! objects grouped into generations, the decision and the render); `lock` (the Lease); `wait`
//! (`--wait`); `watch` (what wakes `--wait` between steps); `client` (kubeconfig and the client).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::apply::{
    ApplyError, ApplyOptions, ChangeSet, DiffOptions, Failed, LiveState, Manager, PruneOptions,
};
use crate::gitops::{self, Checkout, Destination, GitError, Outcome};
use crate::manifest::ObjectRef;
use crate::render::{RenderError, RenderedSet, Renderer};
use crate::rollout::{self, Decision, State};
use crate::spec::{self, Loaded, SpecError};

mod client;
mod delta;
mod fingerprint;
mod lock;
mod observe;
mod report;
mod wait;
mod watch;

pub use report::{Report, settled, summary_lines};

pub use client::{USER_AGENT, client};
use client::{chain, connect};
pub use lock::LEASE_DURATION;
pub use observe::{
    Observation, Step, StepError, observe, observe_members, step_from_cluster, step_from_git,
};

/// How to reach the cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterAccess {
    /// Kubeconfig files (a `KUBECONFIG`-style list); `None`: `KUBECONFIG`, `~/.kube/config`,
    /// then the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

impl ClusterAccess {
    fn explicit(&self) -> bool {
        self.kubeconfig.is_some() || self.context.is_some()
    }
}

/// Where the rendered folder is committed.
#[derive(Clone, Debug)]
pub struct GitTarget {
    /// The repository; an empty `path` is the default folder, `rollouts/<rollout>`.
    pub dest: Destination,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    /// Show what would be committed; write nothing.
    pub preview: bool,
}

/// What a run does to the cluster after deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterWrite {
    /// Nothing (`status`, pull mode, offline).
    None,
    /// Server-side apply of the decided set, then prune when asked; `dry_run` writes nothing.
    Apply {
        prune: bool,
        force_conflicts: bool,
        dry_run: bool,
    },
    /// What `Apply` would change, as diffs (`diff`).
    Diff { prune: bool, color: bool },
}

impl ClusterWrite {
    /// Whether the run writes the cluster (and so must hold the Lease).
    fn writes(self) -> bool {
        matches!(self, ClusterWrite::Apply { dry_run: false, .. })
    }
}

/// Everything a run needs, from the command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub spec: PathBuf,
    pub templates: Option<PathBuf>,
    /// `--generation`: start, or pin when it exists, this generation (per dataset when named).
    pub generation: crate::spec::GenerationIds,
    /// `--snapshot-timeout`: overrides every dataset's `snapshot.timeout` for this run.
    pub snapshot_timeout: Option<Duration>,
    pub cluster: ClusterAccess,
    /// Decide from what Git holds, never contacting a cluster.
    pub offline: bool,
    /// The cluster is required (no offline fallback without a kubeconfig).
    pub cluster_required: bool,
    /// Start a due generation (a run), or only report it (`status`).
    pub start: bool,
    pub git: Option<GitTarget>,
    pub write: ClusterWrite,
    /// How many times a run observes and decides again after the branch moved under it.
    pub redecide_attempts: u32,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The spec could not be read or is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The templates directory could not be loaded.
    #[error("loading templates")]
    Templates(#[source] RenderError),
    /// `--generation` does not fit the names and labels it goes into.
    #[error("rendering {file}")]
    Generation {
        file: String,
        #[source]
        source: RenderError,
    },
    /// The async runtime could not start.
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    /// `--wait` could not make the work directory for its one clone of a URL remote.
    #[error("creating a work directory for the clone")]
    Scratch(#[source] std::io::Error),
    /// The cluster configuration is missing or wrong.
    #[error("{source}{hint}")]
    Connect {
        hint: &'static str,
        #[source]
        source: Box<ApplyError>,
    },
    /// The flags ask for something this run cannot do.
    #[error("{0}")]
    Usage(String),
    /// Observing, deciding or rendering failed.
    #[error("reconcile of rollout {rollout}")]
    Step {
        rollout: String,
        #[source]
        source: StepError,
    },
    /// Reading the cluster failed mid-run (unreachable, refused, forbidden) in a run that could
    /// decide from Git instead: the whole cause, then the `--offline` hint last.
    #[error(
        "reconcile of rollout {rollout}: {} (--offline decides from Git without the cluster)",
        chain(source)
    )]
    ClusterRead {
        rollout: String,
        #[source]
        source: StepError,
    },
    /// Reading or writing Git failed.
    #[error("reconcile of rollout {rollout}")]
    Git {
        rollout: String,
        #[source]
        source: Box<GitError>,
    },
    /// Another run holds the rollout's Lease, or this run lost it.
    #[error("rollout {rollout}")]
    Lease {
        rollout: String,
        #[source]
        source: Box<ApplyError>,
    },
    /// Reading the rollout's Events (`status --events`) failed.
    #[error("reading the Events of rollout {rollout}")]
    Events {
        rollout: String,
        #[source]
        source: Box<ApplyError>,
    },
    /// `--wait` ran out of time: the rollout is still in motion (the next run continues it).
    #[error("timed out after {after:#} waiting for the rollout to settle: {pending}")]
    WaitTimeout {
        after: jiff::SignedDuration,
        pending: String,
    },
}

/// A connection to the cluster: the runtime the async client needs and the manager.
struct Cluster {
    runtime: tokio::runtime::Runtime,
    manager: Manager,
}

/// The engine of one run (one process): spec, templates, cluster connection and Lease.
pub struct Engine {
    opts: Options,
    loaded: Loaded,
    /// The spec file's bytes as read: an offline run's fingerprint digests them.
    spec_bytes: Vec<u8>,
    renderer: Renderer,
    cluster: Option<Cluster>,
    lease: Option<crate::apply::LeaseGuard>,
    /// Where `--wait` keeps its one clone of a URL remote (removed with the engine).
    scratch: Option<tempfile::TempDir>,
}

impl Engine {
    /// Loads the spec and templates and checks `--generation`; [`Engine::connect`] is next.
    pub fn new(opts: Options) -> Result<Engine, EngineError> {
        let bytes = read_spec(&opts)?;
        Engine::with_spec(opts, bytes)
    }

    /// [`Engine::new`] from the spec's bytes already read ([`read_spec`]).
    pub fn with_spec(opts: Options, spec_bytes: Vec<u8>) -> Result<Engine, EngineError> {
        let loaded = spec::parse_bytes(&crate::input::display_name(&opts.spec), &spec_bytes)?;
        let renderer = Renderer::new(opts.templates.as_deref()).map_err(EngineError::Templates)?;
        // An explicit generation must fit every name before any request.
        opts.generation
            .check(&loaded.rollout)
            .map_err(EngineError::Usage)?;
        for g in opts.generation.ids() {
            crate::render::check_generation(&loaded.rollout, g).map_err(|source| {
                EngineError::Generation {
                    file: loaded.file.clone(),
                    source,
                }
            })?;
        }
        if opts.offline && opts.git.is_none() {
            return Err(EngineError::Usage(
                "--offline decides from what Git holds: it needs --repo".to_string(),
            ));
        }
        let mut opts = opts;
        if let Some(t) = &mut opts.git
            && t.dest.path.is_empty()
        {
            t.dest.path = format!("rollouts/{}", loaded.rollout.metadata.name);
        }
        Ok(Engine {
            opts,
            loaded,
            spec_bytes,
            renderer,
            cluster: None,
            lease: None,
            scratch: None,
        })
    }

    /// Connects to the cluster (unless offline) and, for a run that writes the cluster, takes
    /// the rollout's Lease. Separate from [`Engine::new`] so the spec's warnings are printed
    /// before anything can fail on the cluster.
    pub fn connect(&mut self) -> Result<(), EngineError> {
        let opts = &self.opts;
        let cluster = if opts.offline {
            None
        } else {
            connect(opts, &self.loaded)?
        };
        if cluster.is_none() {
            if opts.write != ClusterWrite::None {
                return Err(EngineError::Usage(
                    "applying needs cluster access (--kubeconfig, KUBECONFIG, ~/.kube/config or in-cluster config)".to_string(),
                ));
            }
            if opts.git.is_none() {
                return Err(EngineError::Usage(
                    "without cluster access there is nothing to decide from: pass --repo (Git) or a kubeconfig".to_string(),
                ));
            }
        }
        self.cluster = cluster;
        Ok(())
    }

    /// The loaded spec (its warnings are for the command to print).
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// Whether the run reads the cluster (else it decides from Git).
    pub fn online(&self) -> bool {
        self.cluster.is_some()
    }

    fn rollout_name(&self) -> String {
        self.loaded.rollout.metadata.name.clone()
    }

    /// The last `limit` Events snaproll reported for the rollout, oldest first (`status
    /// --events`); `None` when the run has no cluster access.
    pub fn recent_events(
        &self,
        limit: usize,
    ) -> Result<Option<Vec<crate::events::Recent>>, EngineError> {
        let Some(c) = &self.cluster else {
            return Ok(None);
        };
        let meta = &self.loaded.rollout.metadata;
        c.runtime
            .block_on(crate::events::recent(
                &c.manager,
                &meta.namespace,
                &meta.name,
                limit,
            ))
            .map(Some)
            .map_err(|source| EngineError::Events {
                rollout: meta.name.clone(),
                source: Box::new(source),
            })
    }

    /// One step: observe, decide, render, commit, apply (or diff), prune.
    ///
    /// A step that would write the cluster first takes the rollout's Lease and then observes
    /// and decides again under it, so what it writes is never decided from a state another run
    /// changed meanwhile; a step with nothing to write takes no Lease and writes nothing. When
    /// the branch moved between the read and the commit, the step observes and decides again
    /// from the new head (up to `redecide_attempts` times), so no decision made from an older
    /// state is ever published.
    pub fn step(&mut self, now: jiff::Timestamp) -> Result<Report, EngineError> {
        let rollout = self.rollout_name();
        let mut attempts = 0;
        // What the preview dry-ran: when the step under the Lease plans the same objects on
        // the same live state, the apply does not dry-run them again.
        let mut previewed: Option<u64> = None;
        loop {
            attempts += 1;
            self.check_lease()?;
            let mut planned = self.plan(now)?;
            let mut settled_cluster = None;
            let already_dry_run = previewed.is_some_and(|p| p == planned.state_key());
            if self.opts.write.writes() && self.lease.is_none() {
                previewed = Some(planned.state_key());
                match self.preview_apply(&planned) {
                    // Nothing to write: the preview is the answer, and no Lease is needed.
                    Some(Ok(mut changes)) if !changes.has_changes() => {
                        changes.dry_run = false;
                        settled_cluster = Some(Ok(changes));
                    }
                    // The real apply would fail the same way: report it, write nothing.
                    Some(Err(failed)) if !failed.changes.has_changes() => {
                        settled_cluster = Some(Err(failed));
                    }
                    _ => {
                        self.take_lease()?;
                        attempts -= 1;
                        continue;
                    }
                }
            }
            let git = match &self.opts.git {
                None => None,
                Some(target) => match self.commit(target, &mut planned) {
                    Ok(o) => Some(o),
                    Err(e) if e.is_stale() && attempts <= self.opts.redecide_attempts => {
                        tracing::info!(
                            attempt = attempts,
                            error = %e,
                            "the branch moved since this run read it; deciding again from the new head"
                        );
                        continue;
                    }
                    Err(source) => {
                        return Err(EngineError::Git {
                            rollout: rollout.clone(),
                            source: Box::new(source),
                        });
                    }
                },
            };
            self.check_lease()?;
            let cluster = match settled_cluster {
                Some(c) => Some(c),
                None => self.write_cluster(&planned, self.opts.write, already_dry_run),
            };
            if let (Some(Ok(_)), Some(c)) = (&cluster, &self.cluster)
                && self.opts.write.writes()
            {
                // History a person can see (`kubectl get events`): only what is not reported
                // yet, so a no-op run stays without writes. Never fails the run.
                let events =
                    crate::events::from_decisions(&self.loaded.rollout, &planned.step.decisions);
                let ns = &self.loaded.rollout.metadata.namespace;
                if let Err(e) = c
                    .runtime
                    .block_on(crate::events::emit_events(&c.manager, ns, &events))
                {
                    tracing::warn!(error = %e, "could not record the rollout's Events");
                }
            }
            let Planned {
                step, generation, ..
            } = planned;
            return Ok(Report {
                rollout,
                decisions: step.decisions,
                generation,
                set: step.set,
                git,
                cluster,
                from_cluster: self.cluster.is_some(),
                attempts,
            });
        }
    }

    /// What the run's apply would do, checked with server-side dry-runs only (none at all when
    /// nothing changed): whether the step needs the Lease.
    fn preview_apply(&self, planned: &Planned) -> Option<Result<ChangeSet, Box<Failed>>> {
        match self.opts.write {
            ClusterWrite::Apply {
                prune,
                force_conflicts,
                ..
            } => self.write_cluster(
                planned,
                ClusterWrite::Apply {
                    prune,
                    force_conflicts,
                    dry_run: true,
                },
                false,
            ),
            _ => None,
        }
    }

    /// A failed step of a run that reads the cluster; when it failed reading the cluster and
    /// the run could decide from Git (`--repo`, no cluster writes), the error names `--offline`.
    fn offline_hint(&self, source: StepError) -> EngineError {
        let rollout = self.rollout_name();
        if matches!(source, StepError::Live(_))
            && self.opts.git.is_some()
            && self.opts.write == ClusterWrite::None
        {
            EngineError::ClusterRead { rollout, source }
        } else {
            EngineError::Step { rollout, source }
        }
    }

    fn decision_options(&self, now: jiff::Timestamp) -> rollout::Options {
        let meta = &self.loaded.rollout.metadata;
        rollout::Options {
            generation: self.opts.generation.clone(),
            today: today(now),
            now,
            snapshot_timeout: self.opts.snapshot_timeout,
            start: self.opts.start,
            rollout: meta.name.clone(),
            namespace: meta.namespace.clone(),
        }
    }

    /// Observes, decides and renders.
    fn plan(&self, now: jiff::Timestamp) -> Result<Planned, EngineError> {
        let rollout = &self.loaded.rollout;
        let name = rollout.metadata.name.clone();
        let git_err = |source| EngineError::Git {
            rollout: name.clone(),
            source: Box::new(source),
        };
        let opts = self.decision_options(now);
        let namespace = rollout.metadata.namespace.clone();
        let (step, checkout) = match &self.cluster {
            Some(c) => {
                let mut step = c
                    .runtime
                    .block_on(step_from_cluster(
                        &c.manager,
                        rollout,
                        &self.renderer,
                        &opts,
                    ))
                    .map_err(|e| self.offline_hint(e))?;
                // Datasets that left the spec cannot be rendered: what their retirement still
                // holds is carried over from Git as it was committed, so Git (what Argo CD or
                // Flux applies) keeps it until its turn to go. The cluster's prune holds it
                // by itself.
                if let (Some(target), Some(live)) = (&self.opts.git, &step.live) {
                    let objects: Vec<Value> = live.objects.values().cloned().collect();
                    let mut holds = rollout::removed_holds(&step.decisions, &name, &objects);
                    holds.extend(rollout::source_holds(&step.decisions, &namespace));
                    if !holds.is_empty() {
                        let files = gitops::read(&target.dest).map_err(git_err)?;
                        carry(&mut step.set, &files, &holds);
                    }
                }
                (step, None)
            }
            None => {
                let target = self
                    .opts
                    .git
                    .as_ref()
                    .expect("Engine::new requires Git without a cluster");
                let checkout = Checkout::open(&target.dest).map_err(git_err)?;
                // A run from the same inputs as the head's commit, whose content was a fixed
                // point of them, has nothing to do: stop after reading that one commit.
                let fp = (self.opts.start && !target.preview)
                    .then(|| {
                        fingerprint::offline(&fingerprint::Inputs {
                            spec: &self.spec_bytes,
                            warned: !self.loaded.warnings.is_empty(),
                            templates: self.opts.templates.as_deref(),
                            generation: &opts.generation,
                            today: &opts.today,
                            start: opts.start,
                            snapshot_timeout: opts.snapshot_timeout,
                            folder: &target.dest.path,
                        })
                    })
                    .flatten();
                if let Some(fp) = &fp
                    && let Some(outcome) = checkout.unchanged(fp).map_err(git_err)?
                {
                    let step = Step {
                        observed: BTreeMap::new(),
                        decisions: Vec::new(),
                        set: RenderedSet::default(),
                        live: None,
                    };
                    return Ok(Planned {
                        step,
                        generation: String::new(),
                        checkout: None,
                        unchanged: Some(outcome),
                        fingerprint: None,
                        decided: None,
                        options: opts,
                        partial: None,
                        table: None,
                    });
                }
                // Only the datasets whose inputs changed, when the kept table stands for
                // the head (see `delta`).
                let digests = fp.as_ref().and_then(|_| {
                    delta::Digests::of(
                        rollout,
                        &opts,
                        self.opts.templates.as_deref(),
                        &target.dest.path,
                    )
                });
                let keeper = digests
                    .as_ref()
                    .and_then(|_| checkout.keeper(&delta::key(&target.dest.path)));
                if let (Some(digests), Some(kept)) = (&digests, &keeper)
                    && let Some(p) = self.plan_partial(&checkout, kept, digests, &opts)?
                {
                    #[cfg(debug_assertions)]
                    self.check_partial(&checkout, &p, &opts);
                    let decided = Decided {
                        plan: p.plan,
                        carried: Vec::new(),
                    };
                    return Ok(Planned {
                        step: p.step,
                        generation: p.generation,
                        checkout: Some(checkout),
                        unchanged: None,
                        fingerprint: fp,
                        decided: Some(decided),
                        options: opts,
                        partial: Some(p.partial),
                        table: Some((kept.clone(), p.table, digests.clone())),
                    });
                }
                let (step, plan, carried) = self.plan_full(&checkout, &opts)?;
                let table = digests
                    .filter(|_| carried.is_empty())
                    .and_then(|d| keeper.map(|k| (k, delta::Table::empty(&d), d)));
                let decided = fp.as_ref().map(|_| Decided { plan, carried });
                (step, Some((checkout, fp, decided, table)))
            }
        };
        let (checkout, fingerprint, decided, table) = match checkout {
            Some((c, f, d, t)) => (Some(c), f, d, t),
            None => (None, None, None, None),
        };
        let newest = step
            .decisions
            .iter()
            .flat_map(|d| d.render.iter().map(|g| g.id.clone()))
            .max();
        let generation = self.commit_generation(newest, &opts);
        tracing::debug!(objects = step.set.objects.len(), %generation, "rollout decided and rendered");
        Ok(Planned {
            step,
            generation,
            checkout,
            unchanged: None,
            fingerprint,
            decided,
            options: opts,
            partial: None,
            table,
        })
    }

    /// What a commit message names: a pin (a rollback) when there is one, since the newer
    /// generation still renders while it retires; else the newest rendered generation.
    fn commit_generation(&self, newest: Option<String>, opts: &rollout::Options) -> String {
        self.loaded
            .rollout
            .spec
            .datasets
            .iter()
            .find_map(|d| d.generations.pin.clone())
            .or(newest)
            .or_else(|| self.opts.generation.all.clone())
            .unwrap_or_else(|| opts.today.clone())
    }

    /// The full offline step: every committed file parsed, every dataset decided and rendered,
    /// the objects Git must hold carried over (their ids returned, in the order added).
    fn plan_full(
        &self,
        checkout: &Checkout,
        opts: &rollout::Options,
    ) -> Result<(Step, rollout::Plan, Vec<ObjectRef>), EngineError> {
        let rollout = &self.loaded.rollout;
        let name = &rollout.metadata.name;
        let step_err = |source| EngineError::Step {
            rollout: name.clone(),
            source,
        };
        let files = checkout.read().map_err(|source| EngineError::Git {
            rollout: name.clone(),
            source: Box::new(source),
        })?;
        // Each committed file is parsed once: the decision and `carry` share it
        // (`origin[i]` is the file manifest `i` was read from).
        let (origin, manifests) = parse_committed(&files);
        let (observed, decisions, plan) =
            observe::decide_from_git(&manifests, rollout, opts).map_err(step_err)?;
        let set = self
            .renderer
            .render(rollout, &plan)
            .map_err(|e| step_err(StepError::Render(e)))?;
        let mut step = Step {
            observed,
            decisions,
            set,
            live: None,
        };
        // A dataset that left the spec leaves Git StatefulSets first: the rest of it
        // stays one more run.
        let mut holds = rollout::removed_git_holds(rollout, name, &manifests);
        holds.extend(rollout::source_holds(
            &step.decisions,
            &rollout.metadata.namespace,
        ));
        let carried = carry_parsed(&mut step.set, &files, &origin, manifests, &holds);
        Ok((step, plan, carried))
    }

    /// Debug builds (every test): a partial step must come out as the full step would, file
    /// for file, decision for decision, with the same generation.
    #[cfg(debug_assertions)]
    fn check_partial(&self, checkout: &Checkout, p: &delta::Planned, opts: &rollout::Options) {
        let (full, _, carried) = self.plan_full(checkout, opts).expect("the full step");
        assert!(
            carried.is_empty(),
            "a partial step where the full one carries objects over"
        );
        let json = |d: &[Decision]| serde_json::to_value(d).expect("decisions serialize");
        assert_eq!(
            json(&p.step.decisions),
            json(&full.decisions),
            "partial decisions differ"
        );
        let files = checkout.read().expect("the head's files");
        let mut partial: BTreeMap<String, Vec<u8>> = files
            .into_iter()
            .filter(|f| !p.partial.scope.contains(&f.path))
            .map(|f| (f.path, f.content))
            .collect();
        for f in &p.partial.files {
            partial.insert(f.path.clone(), f.content.clone());
        }
        let whole: BTreeMap<String, Vec<u8>> = full
            .set
            .files()
            .into_iter()
            .map(|(n, c)| (n, c.into_bytes()))
            .collect();
        assert_eq!(
            partial.keys().collect::<Vec<_>>(),
            whole.keys().collect::<Vec<_>>(),
            "a partial step's files differ from the full step's"
        );
        for (name, content) in &whole {
            assert!(
                partial.get(name) == Some(content),
                "a partial step's {name} differs from the full step's"
            );
        }
        let newest = full
            .decisions
            .iter()
            .flat_map(|d| d.render.iter().map(|g| g.id.clone()))
            .max();
        assert_eq!(
            self.commit_generation(newest, opts),
            p.generation,
            "a partial step names another generation"
        );
    }

    /// Commits (or previews) the decided folder. An offline run commits onto the very
    /// snapshot it read; a run that decided from the cluster opens Git here.
    fn commit(&self, target: &GitTarget, planned: &mut Planned) -> Result<Outcome, GitError> {
        if let Some(outcome) = planned.unchanged.take() {
            return Ok(outcome);
        }
        let set = &planned.step.set;
        let partial = planned.partial.take();
        let files: Vec<gitops::File> = match &partial {
            Some(p) => p.files.clone(),
            None => {
                // One object per file; kustomization.yaml describes none.
                let described: BTreeMap<String, String> = set
                    .objects
                    .iter()
                    .map(|o| (o.id.file_name(), o.id.to_string()))
                    .collect();
                set.files()
                    .into_iter()
                    .map(|(name, content)| gitops::File {
                        objects: described.get(&name).cloned().into_iter().collect(),
                        path: name,
                        content: content.into_bytes(),
                    })
                    .collect()
            }
        };
        // The fixed-point check decides what this run decided: the redone datasets only.
        let spec = partial
            .as_ref()
            .map_or(&self.loaded.rollout, |p| &p.rollout);
        let describe = |_: &str, content: &[u8]| describe_removed(content);
        let rollout = self.rollout_name();
        let checkout = match planned.checkout.take() {
            Some(c) => c,
            None => Checkout::open(&target.dest)?,
        };
        let (options, fp) = (&planned.options, planned.fingerprint.as_deref());
        let decided = planned.decided.as_ref();
        std::thread::scope(|scope| {
            // Offline only: there the inputs and Git decide everything (see `fingerprint`).
            // The fixed-point check (a second decision, compared with this one's plan) runs
            // beside the Git write on the other core; Git asks for its answer only when it
            // writes a commit.
            let check = (!target.preview).then_some(decided).flatten().map(|d| {
                scope.spawn(move || {
                    let renderer = &self.renderer;
                    fingerprint::is_fixed_point(set, &d.plan, &d.carried, spec, renderer, options)
                })
            });
            let check = std::cell::RefCell::new((check, None));
            let vouch = || {
                let mut c = check.borrow_mut();
                if let Some(handle) = c.0.take() {
                    c.1 = Some(match handle.join() {
                        Ok(next) => next,
                        // A debug build's cross-check failed: a bug every test must see.
                        Err(panic) if cfg!(debug_assertions) => std::panic::resume_unwind(panic),
                        Err(_) => None,
                    });
                }
                c.1.as_ref().is_some_and(Option::is_some)
            };
            let req = gitops::Request {
                files: &files,
                rollout: &rollout,
                generation: &planned.generation,
                author_name: target.author_name.as_deref(),
                author_email: target.author_email.as_deref(),
                describe_removed: Some(&describe),
                fingerprint: fp,
                fingerprint_check: Some(&vouch),
                scope: partial.as_ref().map(|p| &p.scope),
            };
            if target.preview {
                return checkout.preview(&req);
            }
            let outcome = checkout.publish(&req)?;
            // The table stands for the new head only when its commit recorded the fingerprint
            // (a fixed point); a commit without it leaves the old table, naming an old head.
            // A full run that commits nothing (an upgrade of snaproll, a spec edit of no
            // consequence) left the head as its content: kept for that head when the check
            // finds it a fixed point, so later runs with these inputs redo nothing.
            let head = match outcome.commit {
                Some(c) => Some(c),
                None if partial.is_none() && vouch() => outcome.head,
                None => None,
            };
            if let (Some(commit), Some((keeper, mut table, digests))) = (head, planned.table.take())
                && fp.is_some()
                && let Some(Some(next)) = check.borrow().1.as_ref()
                && table.update(&digests, spec, next, set).is_some()
                && table.covers(&self.loaded.rollout)
            {
                keeper.write(&table.with_head(commit.to_string()).to_bytes());
            }
            Ok(outcome)
        })
    }

    /// Applies (or diffs) the decided set on top of what the observation read.
    fn write_cluster(
        &self,
        planned: &Planned,
        write: ClusterWrite,
        already_dry_run: bool,
    ) -> Option<Result<ChangeSet, Box<Failed>>> {
        let c = self.cluster.as_ref()?;
        let step = &planned.step;
        let objects: Vec<Value> = step
            .live
            .as_ref()
            .map(|l| l.objects.values().cloned().collect())
            .unwrap_or_default();
        // Datasets that left the spec retire in order: the prune holds what must wait.
        let prune_options = PruneOptions {
            removed_datasets: step
                .decisions
                .iter()
                .filter(|d| d.removed)
                .map(|d| d.dataset.clone())
                .collect(),
            keep: {
                let mut keep =
                    rollout::removed_holds(&step.decisions, &self.rollout_name(), &objects);
                keep.extend(rollout::source_holds(
                    &step.decisions,
                    &self.loaded.rollout.metadata.namespace,
                ));
                keep
            },
            ..PruneOptions::default()
        };
        match write {
            ClusterWrite::None => None,
            ClusterWrite::Apply {
                prune,
                force_conflicts,
                dry_run,
            } => {
                let opts = ApplyOptions {
                    prune,
                    force_conflicts,
                    dry_run,
                    prune_options,
                    already_dry_run,
                };
                // The claims of retired StatefulSets (clusters before 1.32, or `whenDeleted:
                // Retain`) are deleted by the prune itself, found by label on every run.
                let live: Option<LiveState> = step.live.clone();
                Some(
                    c.runtime
                        .block_on(c.manager.apply_from(&step.set, &opts, live)),
                )
            }
            ClusterWrite::Diff { prune, color } => {
                let opts = DiffOptions {
                    prune,
                    force_conflicts: false,
                    color,
                };
                let live: Option<LiveState> = step.live.clone();
                Some(
                    c.runtime
                        .block_on(c.manager.diff_from(&step.set, &opts, live)),
                )
            }
        }
    }
}

/// Reads the spec file (`-`: standard input) once, for [`unchanged`] and [`Engine::with_spec`].
pub fn read_spec(opts: &Options) -> Result<Vec<u8>, EngineError> {
    Ok(spec::read(&opts.spec)?)
}

/// The UTC date of `now`: what offline decisions read of the clock.
fn today(now: jiff::Timestamp) -> String {
    now.strftime("%Y-%m-%d").to_string()
}

/// The report of an offline run that has nothing to do, decided before the spec is parsed:
/// the branch head was committed by a run from the same spec bytes (which gave no warnings),
/// templates, build, generation, date and folder, and its content was a fixed point of them
/// (see [`fingerprint`]). Then that run's parse, checks and decision would all come out the
/// same, so none is done: one commit is read and the working tree checked as
/// [`Checkout::unchanged`] does, and the report is the one [`Engine::step`] gives for the same
/// skip (same output, exit code 0).
///
/// `None` means the full run, always safe: not an offline commit run (`--offline` with a
/// local `--repo`, no apply, no dry run), a digest that differs (any input, or a spec with
/// warnings, which must be parsed to print them), or any error on the way (the full run meets
/// it again and reports it as always, e.g. edits in the folder's working tree).
pub fn unchanged(opts: &Options, spec: &[u8], now: jiff::Timestamp) -> Option<Report> {
    let target = opts.git.as_ref()?;
    // A URL is cloned by every `Checkout::open`: checked here, a run with changes would clone
    // twice, so a URL keeps the check after the parse (one clone).
    if !opts.offline
        || !opts.start
        || target.preview
        || opts.write != ClusterWrite::None
        || gitops::is_url(&target.dest.repo)
    {
        return None;
    }
    let name = fingerprint::declared_name(spec);
    let mut dest = target.dest.clone();
    if dest.path.is_empty() {
        dest.path = format!("rollouts/{}", name.as_deref()?);
    }
    let today = today(now);
    let fp = fingerprint::offline(&fingerprint::Inputs {
        spec,
        warned: false,
        templates: opts.templates.as_deref(),
        generation: &opts.generation,
        today: &today,
        start: opts.start,
        snapshot_timeout: opts.snapshot_timeout,
        folder: &dest.path,
    })?;
    let checkout = Checkout::open(&dest).ok()?;
    let outcome = checkout.unchanged(&fp).ok()??;
    Some(Report {
        rollout: name.unwrap_or_default(),
        decisions: Vec::new(),
        generation: String::new(),
        set: RenderedSet::default(),
        git: Some(outcome),
        cluster: None,
        from_cluster: false,
        attempts: 1,
    })
}

/// Observed, decided and rendered; ready to commit and apply.
struct Planned {
    step: Step,
    generation: String,
    /// The repository an offline run read its state from, kept open so the commit goes onto
    /// the same snapshot (a URL is cloned once per step).
    checkout: Option<Checkout>,
    /// Offline: the head's commit had this run's fingerprint, so nothing was read or decided
    /// and this is the commit step's outcome.
    unchanged: Option<Outcome>,
    /// Offline: the inputs' fingerprint, recorded when the commit is a fixed point of them.
    fingerprint: Option<String>,
    /// Offline, with a fingerprint: what the set was rendered from, for the fixed-point check.
    decided: Option<Decided>,
    /// The decision options the plan was made with.
    options: rollout::Options,
    /// Offline, when only the datasets whose inputs changed were redone: the partial request.
    partial: Option<delta::Partial>,
    /// Offline: where the table of what the commit is made from is kept, the table this run
    /// started from (empty for a full run) and this run's digests; the table is completed and
    /// kept once the commit records the fingerprint (see `delta`).
    table: Option<(gitops::Keeper, delta::Table, delta::Digests)>,
}

impl Planned {
    /// A digest of what an apply of this step depends on: every rendered object's YAML and
    /// every live object's identity and resourceVersion. Equal keys: the same apply.
    fn state_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for o in &self.step.set.objects {
            o.id.to_string().hash(&mut h);
            o.yaml.hash(&mut h);
        }
        if let Some(live) = &self.step.live {
            for (id, v) in &live.objects {
                id.to_string().hash(&mut h);
                v.pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .hash(&mut h);
            }
            live.parent
                .as_ref()
                .and_then(|p| p.pointer("/metadata/resourceVersion"))
                .and_then(Value::as_str)
                .hash(&mut h);
        }
        h.finish()
    }
}

/// What an offline set was made of: the plan it was rendered from and the objects carried
/// over from Git (in the order they were added).
struct Decided {
    plan: rollout::Plan,
    carried: Vec<ObjectRef>,
}

/// [`carry`] from manifests already parsed (`origin[i]`: the file `manifests[i]` came from),
/// returning the ids it carried; the same objects, text and order as parsing the files again.
/// The committed files that parse as YAML, as `(index in files, value)` lists in file order.
/// Split across the cores: parsing is most of what a run that changes one dataset of 1,000
/// does before it renders, and each file is independent.
fn parse_committed(files: &[gitops::File]) -> (Vec<usize>, Vec<Arc<Value>>) {
    let parse = |offset: usize, part: &[gitops::File]| -> Vec<(usize, Arc<Value>)> {
        part.iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let text = std::str::from_utf8(&f.content).ok()?;
                Some((offset + i, Arc::new(crate::yaml::from_str(text).ok()?)))
            })
            .collect()
    };
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len().div_ceil(256).max(1));
    let chunk = files.len().div_ceil(workers).max(1);
    let parts: Vec<Vec<(usize, Arc<Value>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| s.spawn(move || parse(n * chunk, part)))
            .collect();
        handles
            .into_iter()
            // As the same parse on this thread would.
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    parts.into_iter().flatten().unzip()
}

fn carry_parsed(
    set: &mut RenderedSet,
    files: &[gitops::File],
    origin: &[usize],
    manifests: Vec<Arc<Value>>,
    holds: &BTreeMap<ObjectRef, String>,
) -> Vec<ObjectRef> {
    let mut carried = Vec::new();
    if !holds.is_empty() {
        for (i, value) in origin.iter().zip(manifests) {
            let Some(id) = ObjectRef::from_value(&value) else {
                continue;
            };
            if !holds.contains_key(&id) || set.objects.iter().any(|o| o.id == id) {
                continue;
            }
            let labels = crate::manifest::labels_of(&value);
            carried.push(id.clone());
            set.objects.push(crate::manifest::Object {
                id,
                dataset: labels.get(crate::manifest::LABEL_DATASET).cloned(),
                generation: labels.get(crate::manifest::LABEL_GENERATION).cloned(),
                yaml: String::from_utf8_lossy(&files[*i].content).into_owned(),
                value,
            });
        }
    }
    set.objects.sort_by_key(|o| o.id.kind.order());
    carried
}

/// Adds the committed files of held objects to the set (by the object each file holds), in
/// apply order.
fn carry(set: &mut RenderedSet, files: &[gitops::File], holds: &BTreeMap<ObjectRef, String>) {
    for f in files {
        let Some(value) = std::str::from_utf8(&f.content)
            .ok()
            .and_then(|t| crate::yaml::from_str(t).ok())
        else {
            continue;
        };
        let Some(id) = ObjectRef::from_value(&value) else {
            continue;
        };
        if !holds.contains_key(&id) || set.objects.iter().any(|o| o.id == id) {
            continue;
        }
        let labels = crate::manifest::labels_of(&value);
        set.objects.push(crate::manifest::Object {
            id,
            dataset: labels.get(crate::manifest::LABEL_DATASET).cloned(),
            generation: labels.get(crate::manifest::LABEL_GENERATION).cloned(),
            yaml: String::from_utf8_lossy(&f.content).into_owned(),
            value: value.into(),
        });
    }
    set.objects.sort_by_key(|o| o.id.kind.order());
}

/// `Kind/name (namespace)` of a manifest being removed, read from its YAML; the file is
/// described by name when it is not one snaproll would render.
fn describe_removed(content: &[u8]) -> Vec<String> {
    std::str::from_utf8(content)
        .ok()
        .and_then(|t| crate::yaml::from_str(t).ok())
        .and_then(|v| ObjectRef::from_value(&v))
        .map(|id| vec![id.to_string()])
        .unwrap_or_default()
}
