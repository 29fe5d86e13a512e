//! Command-line arguments (clap derive). Only argument definitions live here; `commands`
//! carries them out.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Automates dataset rollouts on Kubernetes with volume snapshots.
///
/// snaproll reads a DatasetRollout spec, renders the VolumeSnapshotClass, PVC, producer Pod, dated
/// VolumeSnapshot, Service and generation-suffixed StatefulSet of every dataset, commits them to
/// Git and optionally applies them server-side with diff-then-prune semantics.
#[derive(Debug, Parser)]
#[command(name = "snaproll", version, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Exit codes, shown under `--help` and documented in the README.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success (diff: no changes)
  1  diff: changes found; status, apply, reconcile: a generation failed
  2  invalid input: spec, flags, templates or rendered objects (nothing was written)
  3  Git error: repository, commit or push (nothing was committed, or the push was rejected)
  4  cluster error: configuration, API access, apply, prune or wait
  5  local I/O error: writing --out or stdout
  6  another run holds the rollout's Lease (nothing was written; try again later)";

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log verbosity (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, global = true, env = "SNAPROLL_LOG", default_value = "warn")]
    pub log_level: String,
    /// Log format: human text, or JSON lines (the default when stderr is not a terminal in a cluster).
    #[arg(long, global = true, env = "SNAPROLL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Colour in diffs and messages.
    #[arg(long, global = true, env = "SNAPROLL_COLOR", value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// How to reach the cluster: accepted anywhere on the line, as kubectl's flags are.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    /// The JSON shape, written as YAML.
    Yaml,
}

/// `--dry-run[=none|client|server]` as kubectl spells it; the bare switch means `server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum DryRun {
    /// Write for real (`false` is accepted too, for the environment variable).
    #[default]
    #[value(alias = "false")]
    None,
    /// Same as `server`: what an apply changes depends on the server's merge of the fields
    /// other managers own, so snaproll always asks the server (writing nothing).
    Client,
    /// Server-side dry-run of every change: report what would change, write nothing (`true`
    /// is accepted too).
    #[value(alias = "true")]
    Server,
}

/// `-f SPEC`, declared once for every command that reads a spec.
#[derive(Debug, Args, Clone)]
pub struct SpecArg {
    /// The rollout spec (a DatasetRollout YAML file; `-` reads standard input).
    #[arg(
        short = 'f',
        long = "filename",
        visible_alias = "file",
        env = "SNAPROLL_SPEC",
        value_name = "SPEC"
    )]
    pub file: PathBuf,
}

/// `--dry-run`, declared once for every command that can write.
#[derive(Debug, Args, Clone, Copy)]
pub struct DryRunArg {
    /// Write nothing: report what would change (`client` is the same as `server`).
    ///
    /// A commit shows as a file-level diff; every cluster change is checked with a server-side
    /// dry-run, so defaults and other managers' fields show as they would be.
    #[arg(long, env = "SNAPROLL_DRY_RUN", value_enum, num_args = 0..=1, require_equals = true, default_value = "none", default_missing_value = "server", value_name = "MODE")]
    pub dry_run: DryRun,
}

impl DryRunArg {
    /// Whether the run writes nothing.
    pub fn is_on(self) -> bool {
        self.dry_run != DryRun::None
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a spec, render it and validate every object; writes nothing.
    #[command(after_help = "Examples:\n  snaproll validate -f examples/gke-daily/snaproll.yaml")]
    Validate(ValidateCmd),
    /// Render the manifests to stdout (multi-document YAML) or into a directory.
    #[command(
        after_help = "Examples:\n  snaproll render -f examples/gke-daily/snaproll.yaml --generation 2021-07-15\n  snaproll render -f snaproll.yaml --out manifests/\n\nWith --out, DIR receives one file per object, named <order>-<kind>-<name>.yaml so that\nthey list in apply order, and a kustomization.yaml listing them. DIR is replaced only\nafter every object validated. Files in DIR that snaproll did not write (added by hand) stop\nthe run, which names them; --force deletes them."
    )]
    Render(RenderCmd),
    /// Show what `apply` would change in the cluster now (exit 0: none, 1: changes, 2+: error).
    #[command(after_help = "Examples:\n  snaproll diff -f snaproll.yaml --generation 2021-07-16")]
    Diff(DiffCmd),
    /// Advance the rollout one step in the cluster: apply what it decided, then optionally prune.
    #[command(
        after_help = "Examples:\n  snaproll apply -f snaproll.yaml --dry-run\n  snaproll apply -f snaproll.yaml --prune -o json\n\napply reads the cluster, decides each dataset's generations and applies exactly the decided\nparts with server-side apply (field manager snaproll), as `reconcile` without --repo does:\nthe producer Pod first; the VolumeSnapshot only once the producer Succeeded; the StatefulSet\nonly once the snapshot is readyToUse. Each run advances as far as it can; run it again (or\nuse `reconcile --apply --wait`) to continue. A run that writes holds the rollout's Lease."
    )]
    Apply(ApplyCmd),
    /// Render, commit to Git (and push), optionally apply: the main job, run by a CronJob.
    #[command(
        after_help = "Examples:\n  snaproll reconcile -f examples/gke-daily/snaproll.yaml --repo ./gitops --generation 2021-07-15\n  snaproll reconcile -f snaproll.yaml --repo https://git.example.com/ops.git --push\n  snaproll reconcile -f snaproll.yaml --repo ./gitops --apply --prune"
    )]
    Reconcile(ReconcileCmd),
    /// Show each dataset's generations and their state.
    #[command(
        after_help = "Examples:\n  snaproll status -f snaproll.yaml\n  snaproll status -f snaproll.yaml -o json"
    )]
    Status(StatusCmd),
    /// Render what runs snaproll as a CronJob for this rollout: ServiceAccount, least-privilege RBAC, spec ConfigMap (the spec `-f` names, embedded), CronJob.
    #[command(
        after_help = "Examples:\n  snaproll install -f snaproll.yaml --repo https://git.example.com/ops.git\n  snaproll install -f snaproll.yaml --repo https://git.example.com/ops.git --pull\n  snaproll install -f snaproll.yaml --schedule '*/10 * * * *' --out install/\n  snaproll install -f snaproll.yaml --repo https://git.example.com/ops.git --apply\n  snaproll install -f snaproll.yaml | kubectl apply --server-side -f -\n\nThe Role grants list, create, patch and delete on exactly the kinds the spec renders, and get,\ncreate and patch on its ApplySet ConfigMap only, and create on Events (the rollout's history),\nin the rollout's namespace (--pull: list only).\nA ClusterRole is rendered only when snaproll applies a VolumeSnapshotClass it manages\n(spec.snapshotClass.existing: false). The Git credentials are read from the Secret named by\n--git-secret, which you create: key `token` (and optionally `username`) for HTTPS remotes;\nkeys `ssh-privatekey` and `known_hosts` (the host keys, e.g. from ssh-keyscan) for SSH\nremotes. They are never rendered."
    )]
    Install(InstallCmd),
    /// Print the JSON Schema (draft 2020-12) of the DatasetRollout spec, for editors and CI.
    #[command(
        after_help = "Examples:\n  snaproll schema > datasetrollout.schema.json\n\nThe schema is derived from the types snaproll parses the spec into, so it cannot drift from\nthem; the same schema is committed as schema/datasetrollout.schema.json. With the\nyaml-language-server (VS Code, Neovim, Helix...), a spec's first line\n  # yaml-language-server: $schema=<path or URL of the schema>\ngives completion and checking while editing. `snaproll validate` still checks what a schema\ncannot (names, sizes, cross-field rules)."
    )]
    Schema,
    /// Print shell completions.
    #[command(
        after_help = "Examples:\n  snaproll completions bash > /etc/bash_completion.d/snaproll"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the version, the commit it was built from and the Kubernetes APIs it speaks.
    #[command(after_help = "Examples:\n  snaproll version -o json")]
    Version(VersionCmd),
    /// Completions for kubectl's plugin completion (`kubectl_complete-snaproll` runs it): the
    /// candidates for the last word, one per line, then cobra's `:<directive>` line.
    #[command(name = "__complete", hide = true)]
    Complete {
        /// The words after `snaproll`, the last one being completed (possibly empty).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

/// The run's clock: every command that decides by date or measures a timeout takes it.
#[derive(Debug, Args, Clone, Default)]
pub struct ClockArgs {
    /// The current time as the run sees it (RFC 3339, e.g. 2021-07-16T04:00:00Z; default: the
    /// clock). It picks the daily generation and measures snapshot timeouts: use it to see what
    /// tomorrow's run would do, or to replay a run.
    #[arg(long, env = "SNAPROLL_NOW", value_name = "TIMESTAMP")]
    pub now: Option<jiff::Timestamp>,
}

/// `--snapshot-timeout` as the commands that decide a rollout take it (`install` passes its
/// own, kept as typed, to the CronJob).
#[derive(Debug, Args, Clone, Default)]
pub struct SnapshotArgs {
    /// Override every dataset's `snapshot.timeout` (default 6h) for this run: how long a
    /// snapshot may take to become ready before its generation counts as failed.
    #[arg(
        id = "snapshot_timeout",
        long = "snapshot-timeout",
        env = "SNAPROLL_SNAPSHOT_TIMEOUT",
        value_name = "DURATION",
        value_parser = parse_timeout
    )]
    pub timeout: Option<std::time::Duration>,
}

/// `-o/--output`: every command that prints takes it.
#[derive(Debug, Args, Clone, Copy)]
pub struct OutputArgs {
    /// Output format.
    #[arg(
        id = "output",
        short = 'o',
        long = "output",
        env = "SNAPROLL_OUTPUT",
        value_name = "OUTPUT",
        value_enum,
        default_value_t = OutputFormat::Text
    )]
    pub format: OutputFormat,
}

/// What to render: every command that renders takes these.
#[derive(Debug, Args, Clone)]
pub struct RenderArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    /// Generation id (default: today's UTC date, YYYY-MM-DD); DATASET=G names one dataset's
    /// (repeatable; it wins over a plain G for that dataset).
    #[arg(
        long,
        env = "SNAPROLL_GENERATION",
        value_name = "[DATASET=]G",
        value_delimiter = ','
    )]
    pub generation: Vec<crate::spec::GenerationArg>,
    /// Directory whose <kind>.yaml.j2 files replace the built-in templates.
    #[arg(long, env = "SNAPROLL_TEMPLATES", value_name = "DIR")]
    pub templates: Option<PathBuf>,
    #[command(flatten)]
    pub clock: ClockArgs,
}

#[derive(Debug, Args)]
#[command(mut_arg("output", |a| a.help(
    "Output format: text (the YAML stream, as yaml), or json (a v1 List of the objects)"
)))]
pub struct RenderCmd {
    #[command(flatten)]
    pub render: RenderArgs,
    /// Write one file per object (and a kustomization.yaml) into DIR instead of stdout.
    #[arg(long, env = "SNAPROLL_OUT", value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With --out: replace DIR even when it holds files snaproll did not write there.
    #[arg(long, env = "SNAPROLL_FORCE", requires = "out")]
    pub force: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ValidateCmd {
    #[command(flatten)]
    pub render: RenderArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct VersionCmd {
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How to reach the cluster.
#[derive(Debug, Args, Clone, Default)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster config).
    #[arg(long, global = true, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, global = true, env = "SNAPROLL_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiffCmd {
    #[command(flatten)]
    pub render: RenderArgs,
    /// Filled from the global `--kubeconfig`/`--context` before the command runs.
    #[arg(skip)]
    pub cluster: ClusterArgs,
    /// Also show objects that `apply --prune` would delete.
    #[arg(long, env = "SNAPROLL_PRUNE")]
    pub prune: bool,
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ApplyFlags {
    /// Delete owned objects that are no longer rendered, after every apply succeeded.
    #[arg(long, env = "SNAPROLL_PRUNE")]
    pub prune: bool,
    /// Take ownership of fields another field manager owns.
    #[arg(long, env = "SNAPROLL_FORCE_CONFLICTS")]
    pub force_conflicts: bool,
}

#[derive(Debug, Args)]
pub struct ApplyCmd {
    #[command(flatten)]
    pub render: RenderArgs,
    /// Filled from the global `--kubeconfig`/`--context` before the command runs.
    #[arg(skip)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub apply: ApplyFlags,
    #[command(flatten)]
    pub dry_run: DryRunArg,
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where the rendered manifests go in Git.
#[derive(Debug, Args, Clone)]
pub struct GitArgs {
    /// Git repository: a local path (working or bare; created when missing) or a remote URL
    /// (cloned into --workdir or a temporary directory, committed to and pushed). Without it,
    /// reconcile writes no Git: it applies to the cluster (push mode, --apply implied).
    #[arg(long, env = "SNAPROLL_REPO", value_name = "PATH_OR_URL")]
    pub repo: Option<String>,
    /// Folder inside the repository that snaproll owns (default: rollouts/<rollout name>).
    #[arg(long, env = "SNAPROLL_GIT_PATH", value_name = "DIR")]
    pub path: Option<String>,
    /// Branch to commit to (default: the repository's current branch, or main). It must exist
    /// unless the repository is empty, where the first commit creates it.
    #[arg(long, env = "SNAPROLL_GIT_BRANCH", value_name = "NAME")]
    pub branch: Option<String>,
    /// Push the branch to the remote after committing (never forced).
    #[arg(long, env = "SNAPROLL_GIT_PUSH")]
    pub push: bool,
    /// Remote to push to and fetch from.
    #[arg(
        long,
        env = "SNAPROLL_GIT_REMOTE",
        default_value = "origin",
        value_name = "NAME"
    )]
    pub remote: String,
    /// Work directory for a clone of a remote URL (default: a temporary directory, removed after).
    #[arg(long, env = "SNAPROLL_GIT_WORKDIR", value_name = "DIR")]
    pub workdir: Option<std::path::PathBuf>,
    /// SSH private key for SSH remotes (default: the SSH agent).
    #[arg(long, env = "SNAPROLL_GIT_SSH_KEY", value_name = "FILE")]
    pub ssh_key: Option<std::path::PathBuf>,
    /// Commit author name (default: $SNAPROLL_GIT_AUTHOR_NAME, git config user.name, "snaproll").
    #[arg(long, env = "SNAPROLL_GIT_AUTHOR_NAME", value_name = "NAME")]
    pub author_name: Option<String>,
    /// Commit author email (default: $SNAPROLL_GIT_AUTHOR_EMAIL, git config user.email, "snaproll@localhost").
    #[arg(long, env = "SNAPROLL_GIT_AUTHOR_EMAIL", value_name = "EMAIL")]
    pub author_email: Option<String>,
    /// How many times to rebuild and retry a push the remote rejected as non-fast-forward.
    #[arg(
        long,
        env = "SNAPROLL_GIT_PUSH_RETRIES",
        default_value_t = 5,
        value_name = "N"
    )]
    pub push_retries: u32,
}

#[derive(Debug, Args)]
pub struct ReconcileCmd {
    #[command(flatten)]
    pub render: RenderArgs,
    #[command(flatten)]
    pub git: GitArgs,
    /// Filled from the global `--kubeconfig`/`--context` before the command runs.
    #[arg(skip)]
    pub cluster: ClusterArgs,
    /// Apply to the cluster after committing (push mode).
    #[arg(long, env = "SNAPROLL_APPLY")]
    pub apply: bool,
    #[command(flatten)]
    pub apply_flags: ApplyFlags,
    #[command(flatten)]
    pub dry_run: DryRunArg,
    /// Never contact a cluster: decide from what Git holds (without any cluster configuration
    /// this is automatic).
    #[arg(long, env = "SNAPROLL_OFFLINE", conflicts_with = "apply")]
    pub offline: bool,
    /// Keep reconciling until every dataset has settled (serving, or failed), up to --timeout.
    #[arg(long, env = "SNAPROLL_WAIT")]
    pub wait: bool,
    /// How long --wait may take (e.g. 90m, 6h).
    #[arg(
        long,
        env = "SNAPROLL_TIMEOUT",
        default_value = "6h",
        value_name = "DURATION"
    )]
    pub timeout: jiff::SignedDuration,
    /// The resync period of --wait: between runs it watches the rollout's Pods, VolumeSnapshots
    /// and StatefulSets and runs again as soon as one changes status, or after this at the latest.
    #[arg(
        long,
        env = "SNAPROLL_POLL_INTERVAL",
        default_value = "15s",
        value_name = "DURATION"
    )]
    pub poll_interval: jiff::SignedDuration,
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct StatusCmd {
    #[command(flatten)]
    pub spec: SpecArg,
    /// Filled from the global `--kubeconfig`/`--context` before the command runs.
    #[arg(skip)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub clock: ClockArgs,
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Also show the last N Events snaproll reported for the rollout (default 10), oldest
    /// first; `-o json` then prints `{decisions, events}`.
    #[arg(
        long,
        env = "SNAPROLL_EVENTS",
        value_name = "N",
        num_args = 0..=1,
        default_missing_value = "10"
    )]
    pub events: Option<usize>,
}

#[derive(Debug, Args)]
pub struct InstallCmd {
    #[command(flatten)]
    pub spec: SpecArg,
    /// Cron schedule of the CronJob. Each run advances the rollout as far as it can and exits, so
    /// run it more often than the data refreshes.
    #[arg(
        long,
        env = "SNAPROLL_SCHEDULE",
        default_value = "*/15 * * * *",
        value_name = "CRON"
    )]
    pub schedule: String,
    /// Git repository the CronJob commits and pushes to (default: no Git; the CronJob runs
    /// `snaproll reconcile --apply --prune` against the cluster only).
    #[arg(long, env = "SNAPROLL_REPO", value_name = "URL")]
    pub repo: Option<String>,
    /// Secret (in the CronJob's namespace) with the Git credentials: key `token` (HTTPS), or
    /// keys `ssh-privatekey` and `known_hosts` (SSH remotes).
    #[arg(
        long,
        env = "SNAPROLL_GIT_SECRET",
        default_value = "snaproll-git",
        value_name = "NAME"
    )]
    pub git_secret: String,
    /// Container image of snaproll (default: ghcr.io/snaproll/snaproll:<this version>).
    #[arg(long, env = "SNAPROLL_IMAGE", value_name = "IMAGE")]
    pub image: Option<String>,
    /// Namespace of the CronJob, ServiceAccount and ConfigMap (default: the rollout's namespace).
    #[arg(
        short = 'n',
        long,
        env = "SNAPROLL_INSTALL_NAMESPACE",
        value_name = "NS"
    )]
    pub namespace: Option<String>,
    /// Write one file per object into DIR instead of stdout.
    #[arg(long, env = "SNAPROLL_OUT", value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Pull mode (GitOps): the CronJob only commits and pushes, Argo CD or Flux applies; the Role
    /// only lists the rollout's objects and no ClusterRole is rendered.
    #[arg(long, env = "SNAPROLL_PULL", requires = "repo")]
    pub pull: bool,
    /// Override every dataset's `snapshot.timeout` in the CronJob's `reconcile` (passed as
    /// `--snapshot-timeout`). Prefer setting `snapshot.timeout` in the spec, which `status`
    /// and every other run read too.
    #[arg(long, env = "SNAPROLL_SNAPSHOT_TIMEOUT", value_name = "DURATION", value_parser = parse_duration_text)]
    pub snapshot_timeout: Option<String>,
    /// Apply the objects to the cluster (server-side apply, field manager `snaproll`, every
    /// change dry-run first) and print what changed, instead of printing them.
    #[arg(long, env = "SNAPROLL_APPLY", conflicts_with = "out")]
    pub apply: bool,
    #[command(flatten)]
    pub dry_run: DryRunArg,
    /// With --apply: take ownership of fields another field manager owns.
    #[arg(long, env = "SNAPROLL_FORCE_CONFLICTS", requires = "apply")]
    pub force_conflicts: bool,
    /// Filled from the global `--kubeconfig`/`--context` before the command runs.
    #[arg(skip)]
    pub cluster: ClusterArgs,
}

/// A duration as `snapshot.timeout` in the spec takes it; `0s` too (fail any snapshot not
/// ready yet, for one run).
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<jiff::SignedDuration>() {
        Ok(d) if d.is_zero() => Ok(std::time::Duration::ZERO),
        _ => crate::spec::parse_timeout(s),
    }
}

/// A duration as `--snapshot-timeout` accepts it (`12h`, `90m`, `PT12H`), kept as typed so it
/// reaches the CronJob's arguments unchanged.
fn parse_duration_text(s: &str) -> Result<String, String> {
    crate::install::check_duration(s)?;
    Ok(s.to_string())
}
