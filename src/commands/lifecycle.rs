//! The rollout lifecycle behind `reconcile` and `status`: observe (the cluster, read-only, or
//! Git when there is no cluster), decide with [`crate::rollout`], render exactly the decided
//! parts; in push mode, apply and prune them.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::apply::{ApplyOptions, ChangeSet, Failed, Manager};
use crate::cli::{ClusterArgs, OutputFormat, RenderArgs};
use crate::gitops;
use crate::render::{RenderedSet, Renderer};
use crate::rollout::{self, Decision, Options, State};
use crate::spec::{self, Loaded};

/// Where a run learns the state of its generations.
pub(crate) enum Source<'a> {
    /// `status`: the cluster, which is required.
    Status,
    /// `reconcile`: the cluster when there is one (read-only unless `--apply`), else (or with
    /// `--offline`) what Git holds.
    Reconcile {
        git: &'a crate::cli::GitArgs,
        offline: bool,
    },
}

/// One observed-and-decided run, ready to commit or apply.
pub(crate) struct Run {
    pub loaded: Loaded,
    /// The generation the run is about (for commit messages): the newest rendered one.
    pub generation: String,
    pub set: RenderedSet,
    pub decisions: Vec<Decision>,
    /// The cluster, when it was read.
    pub cluster: Option<Cluster>,
    /// What the cluster held when the run observed it.
    pub live: Option<crate::apply::LiveState>,
    /// The Git repository an offline run read its state from, kept open so the commit goes
    /// onto the same snapshot (a URL is cloned once per run).
    pub checkout: Option<gitops::Checkout>,
}

/// A connection to the cluster: the runtime the async client needs and the manager.
pub(crate) struct Cluster {
    pub runtime: tokio::runtime::Runtime,
    pub manager: Manager,
}

/// Observes, decides and renders. `start` says whether a due generation is started (a
/// reconcile) or only reported (`status`).
pub(crate) fn prepare(
    render: &RenderArgs,
    cluster_args: &ClusterArgs,
    source: Source<'_>,
    snapshot_timeout: Duration,
    now: jiff::Timestamp,
    start: bool,
) -> Result<Run> {
    let loaded = spec::load(&render.file)?;
    for w in &loaded.warnings {
        super::warn(&w.to_string());
    }
    let rollout_name = loaded.rollout.metadata.name.clone();
    let opts = Options {
        generation: render.generation.clone(),
        today: now.strftime("%Y-%m-%d").to_string(),
        now,
        snapshot_timeout,
        start,
        rollout: rollout_name.clone(),
        namespace: loaded.rollout.metadata.namespace.clone(),
    };
    let renderer = Renderer::new(render.templates.as_deref()).context("loading templates")?;
    // Check an explicit generation before any request: it must fit every name.
    if let Some(g) = &render.generation {
        crate::render::check_generation(&loaded.rollout, g)
            .with_context(|| format!("rendering {}", loaded.file))?;
    }

    let mut carry_from = None;
    let (cluster, git) = match source {
        Source::Status => (connect(cluster_args, &loaded, true)?, None),
        Source::Reconcile { git, offline } => {
            let cluster = if offline {
                None
            } else {
                connect(cluster_args, &loaded, false)?
            };
            let dest = super::reconcile::destination(git, &rollout_name);
            if cluster.is_some() {
                carry_from = Some(dest);
                (cluster, None)
            } else {
                (cluster, Some(dest))
            }
        }
    };
    let checkout = git
        .as_ref()
        .map(gitops::Checkout::open)
        .transpose()
        .with_context(|| format!("reconcile of rollout {rollout_name}"))?;
    let step = match (&cluster, checkout.as_ref()) {
        (Some(c), _) => c.runtime.block_on(rollout::step_from_cluster(
            &c.manager,
            &loaded.rollout,
            &renderer,
            &opts,
        )),
        (None, git) => {
            let files = match git {
                Some(checkout) => checkout
                    .read()
                    .with_context(|| format!("reconcile of rollout {rollout_name}"))?,
                None => Vec::new(),
            };
            let manifests: Vec<Value> = files
                .iter()
                .filter_map(|f| std::str::from_utf8(&f.content).ok())
                .filter_map(|t| crate::yaml::from_str(t).ok())
                .collect();
            rollout::step_from_git(&manifests, &loaded.rollout, &renderer, &opts).map(|mut step| {
                // A dataset that left the spec leaves Git StatefulSets first: the rest of
                // it stays one more run.
                let holds = rollout::removed_git_holds(&loaded.rollout, &rollout_name, &manifests);
                carry(&mut step.set, &files, &holds);
                step
            })
        }
    }
    .with_context(|| format!("reconcile of rollout {rollout_name}"))?;
    let mut step = step;
    // Datasets that left the spec cannot be rendered: what their retirement still holds is
    // carried over from Git as it was committed, so Git (what Argo CD or Flux applies) keeps it
    // until its turn to go.
    if let (Some(dest), Some(live)) = (&carry_from, &step.live) {
        let objects: Vec<Value> = live.objects.values().cloned().collect();
        let holds = rollout::removed_holds(&step.decisions, &rollout_name, &objects);
        if !holds.is_empty() {
            let files = gitops::read(dest)
                .with_context(|| format!("reconcile of rollout {rollout_name}"))?;
            carry(&mut step.set, &files, &holds);
        }
    }
    let generation = step
        .decisions
        .iter()
        .flat_map(|d| d.render.iter().map(|g| g.id.clone()))
        .max()
        .or_else(|| render.generation.clone())
        .unwrap_or_else(|| opts.today.clone());
    let rollout::Step {
        decisions,
        set,
        live,
        ..
    } = step;
    tracing::debug!(objects = set.objects.len(), %generation, "rollout decided and rendered");
    Ok(Run {
        loaded,
        generation,
        set,
        decisions,
        cluster,
        live,
        checkout,
    })
}

/// Adds the committed files of held objects to the set (by the object each file holds), in
/// apply order.
fn carry(
    set: &mut RenderedSet,
    files: &[gitops::File],
    holds: &std::collections::BTreeMap<crate::manifest::ObjectRef, String>,
) {
    for f in files {
        let Ok(text) = std::str::from_utf8(&f.content) else {
            continue;
        };
        let Ok(value) = crate::yaml::from_str(text) else {
            continue;
        };
        let Some(kind) = value
            .get("kind")
            .and_then(Value::as_str)
            .and_then(crate::manifest::Kind::from_kind)
        else {
            continue;
        };
        let field = |p: &str| value.pointer(p).and_then(Value::as_str).map(String::from);
        let id = crate::manifest::ObjectRef::new(
            kind,
            field("/metadata/namespace").as_deref(),
            &field("/metadata/name").unwrap_or_default(),
        );
        if !holds.contains_key(&id) || set.objects.iter().any(|o| o.id == id) {
            continue;
        }
        let labels = crate::manifest::labels_of(&value);
        set.objects.push(crate::manifest::Object {
            id,
            dataset: labels.get(crate::manifest::LABEL_DATASET).cloned(),
            generation: labels.get(crate::manifest::LABEL_GENERATION).cloned(),
            yaml: text.to_string(),
            value,
        });
    }
    set.objects.sort_by_key(|o| o.id.kind.order());
}

/// Connects to the cluster. Without any configuration (no kubeconfig, not in a cluster) a
/// reconcile runs offline; anything else that fails is an error, never a silent fallback.
fn connect(args: &ClusterArgs, loaded: &Loaded, required: bool) -> Result<Option<Cluster>> {
    let explicit = args.kubeconfig.is_some() || args.context.is_some();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match runtime.block_on(super::cluster::client(args)) {
        Ok(client) => {
            let meta = &loaded.rollout.metadata;
            let manager = Manager::new(client, &meta.name, &meta.namespace);
            Ok(Some(Cluster { runtime, manager }))
        }
        Err(e)
            if !explicit && !required && matches!(e, crate::apply::ApplyError::Config { .. }) =>
        {
            tracing::debug!(error = %e, "no cluster configuration");
            tracing::info!(
                "no kubeconfig or in-cluster configuration found: deciding from Git (offline mode)"
            );
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::new(e).context("connecting to the cluster")),
    }
}

/// Push mode: applies the run's set and prunes when asked.
pub(crate) fn apply(
    run: &Run,
    prune: bool,
    force_conflicts: bool,
    dry_run: bool,
) -> Result<ChangeSet, Box<Failed>> {
    let Some(cluster) = &run.cluster else {
        unreachable!("apply needs a cluster; reconcile checks before calling")
    };
    // Datasets that left the spec retire in order: the prune holds what must wait.
    let objects: Vec<Value> = run
        .live
        .as_ref()
        .map(|l| l.objects.values().cloned().collect())
        .unwrap_or_default();
    let mut prune_options = crate::apply::PruneOptions {
        removed_datasets: run
            .decisions
            .iter()
            .filter(|d| d.removed)
            .map(|d| d.dataset.clone())
            .collect(),
        ..crate::apply::PruneOptions::default()
    };
    prune_options.keep =
        rollout::removed_holds(&run.decisions, &run.loaded.rollout.metadata.name, &objects);
    let opts = ApplyOptions {
        prune,
        force_conflicts,
        dry_run,
        prune_options,
    };
    // The claims of retired StatefulSets (clusters before 1.32, or `whenDeleted: Retain`)
    // are deleted by the prune itself, found by label on every run: one mechanism.
    cluster.runtime.block_on(
        cluster
            .manager
            .apply_from(&run.set, &opts, run.live.clone()),
    )
}

/// Whether every dataset has settled: something serves (or failed) and nothing is in motion.
pub(crate) fn settled(decisions: &[Decision]) -> bool {
    decisions.iter().all(|d| {
        d.generations.iter().all(|g| {
            !matches!(
                g.state,
                State::Producing
                    | State::Snapshotting
                    | State::RollingOut
                    | State::Retiring
                    | State::Waiting
            )
        })
    })
}

/// Whether any generation failed.
pub(crate) fn any_failed(decisions: &[Decision]) -> bool {
    decisions.iter().any(Decision::failed)
}

/// The per-dataset table of `status` (and `reconcile`'s report).
pub(crate) fn table(decisions: &[Decision]) -> String {
    let mut rows = vec![[
        "DATASET".to_string(),
        "GENERATION".to_string(),
        "STATE".to_string(),
        "FIRST SEEN".to_string(),
        "DETAIL".to_string(),
    ]];
    for d in decisions {
        if d.generations.is_empty() {
            rows.push([
                d.dataset.clone(),
                "-".into(),
                "none".into(),
                "-".into(),
                "no generation yet".into(),
            ]);
        }
        for g in &d.generations {
            rows.push([
                d.dataset.clone(),
                g.generation.clone(),
                g.state.to_string(),
                g.first_seen.clone().unwrap_or_else(|| "-".to_string()),
                g.detail.clone(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", r[i]));
        }
        out.push_str(&r[4]);
        out.push('\n');
    }
    out
}

/// The decisions as JSON (`-o json`).
pub(crate) fn to_json(decisions: &[Decision]) -> Value {
    serde_json::to_value(decisions).expect("decisions serialise")
}

/// One line per dataset: `data: 2021-07-15 serving (3/3 replicas ready); 2021-07-16 producing`.
pub(crate) fn summary_lines(decisions: &[Decision]) -> Vec<String> {
    decisions
        .iter()
        .map(|d| {
            let gens: Vec<String> = d
                .generations
                .iter()
                .map(|g| {
                    if g.detail.is_empty() {
                        format!("{} {}", g.generation, g.state)
                    } else {
                        format!("{} {} ({})", g.generation, g.state, g.detail)
                    }
                })
                .collect();
            format!("{}: {}", d.dataset, gens.join("; "))
        })
        .collect()
}

/// `status -f SPEC`: reads the cluster, reports, changes nothing.
pub fn status(cmd: &crate::cli::StatusCmd) -> Result<u8> {
    let render = RenderArgs {
        file: cmd.file.clone(),
        generation: None,
        templates: None,
    };
    let run = prepare(
        &render,
        &cmd.cluster,
        Source::Status,
        cmd.snapshot_timeout.unsigned_abs(),
        cmd.now.unwrap_or_else(jiff::Timestamp::now),
        false,
    )?;
    let text = match cmd.output {
        OutputFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&to_json(&run.decisions)).expect("JSON")
        ),
        OutputFormat::Text => table(&run.decisions),
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .context("writing to stdout")?;
    Ok(if any_failed(&run.decisions) {
        crate::exit::CHANGES
    } else {
        crate::exit::OK
    })
}

/// A spinner on a terminal, a log line per poll elsewhere.
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress { bar }
    }

    pub fn update(&self, elapsed: Duration, decisions: &[Decision]) {
        let line = summary_lines(decisions).join(" | ");
        match &self.bar {
            Some(b) => b.set_message(format!("[{}s] {line}", elapsed.as_secs())),
            None => tracing::info!(elapsed_secs = elapsed.as_secs(), "{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
