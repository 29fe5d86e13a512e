//! What each CLI command does: the only layer that uses `anyhow`, adding context to the typed
//! errors of the library modules and mapping them to exit codes.

mod cluster;
mod install;
mod lifecycle;
mod reconcile;
mod render;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, ColorChoice, Command, GlobalArgs, LogFormat, RenderArgs};
use crate::exit;
use crate::render::{Plan, RenderError, RenderedSet, Renderer};
use crate::spec::{self, GenerationIds, Loaded, SpecError};

/// Runs a parsed command line; `Ok` carries the exit code of a run that did not fail.
pub fn run(cli: Cli) -> Result<u8> {
    let color = use_color(cli.global.color);
    let cluster = cli.global.cluster.clone();
    match cli.command {
        Command::Validate(cmd) => render::validate(&cmd),
        Command::Render(cmd) => render::render(&cmd),
        Command::Version(cmd) => version(&cmd),
        Command::Complete { words } => {
            print!("{}", complete(&words));
            Ok(exit::OK)
        }
        Command::Completions { shell } => {
            // Generated into memory: clap_complete panics when its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "snaproll", &mut script);
            let mut out = std::io::stdout().lock();
            out.write_all(&script)
                .and_then(|_| out.flush())
                .context("writing to stdout")?;
            Ok(exit::OK)
        }
        Command::Schema => {
            let mut text = serde_json::to_string_pretty(&spec::json_schema())
                .context("cannot serialise the spec schema")?;
            text.push('\n');
            let mut out = std::io::stdout().lock();
            std::io::Write::write_all(&mut out, text.as_bytes())
                .and_then(|_| std::io::Write::flush(&mut out))
                .context("writing to stdout")?;
            Ok(exit::OK)
        }
        Command::Diff(mut cmd) => {
            cmd.cluster = cluster;
            cluster::diff(&cmd, color)
        }
        Command::Apply(mut cmd) => {
            cmd.cluster = cluster;
            cluster::apply(&cmd, color)
        }
        Command::Reconcile(mut cmd) => {
            cmd.cluster = cluster;
            reconcile::reconcile(&cmd, color)
        }
        Command::Status(mut cmd) => {
            cmd.cluster = cluster;
            cluster::status(&cmd, color)
        }
        Command::Install(mut cmd) => {
            cmd.cluster = cluster;
            install::install(&cmd)
        }
    }
}

/// The Kubernetes API groups and versions snaproll reads and writes.
pub const API_VERSIONS: [&str; 4] = [
    "apps/v1",
    "v1",
    "snapshot.storage.k8s.io/v1",
    "coordination.k8s.io/v1",
];

/// `version`: the release, the commit it was built from (`unknown` outside a Git checkout) and
/// the API versions it speaks, so a bug report or a cluster upgrade can be checked against them.
fn version(cmd: &crate::cli::VersionCmd) -> Result<u8> {
    let value = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "gitCommit": env!("SNAPROLL_GIT_COMMIT"),
        "apiVersions": API_VERSIONS,
    });
    match cmd.output.format {
        crate::cli::OutputFormat::Text => {
            use std::io::Write;
            writeln!(
                std::io::stdout(),
                "snaproll {} (commit {})\nKubernetes APIs: {}",
                env!("CARGO_PKG_VERSION"),
                env!("SNAPROLL_GIT_COMMIT"),
                API_VERSIONS.join(", ")
            )
            .context("writing to stdout")?
        }
        format => print_data(format, &value)?,
    }
    Ok(exit::OK)
}

/// Prints a command's data as `-o json` (pretty JSON) or `-o yaml` (the same shape through the
/// project's YAML writer, which quotes whatever YAML 1.1 readers would misread).
pub(crate) fn print_data(
    format: crate::cli::OutputFormat,
    value: &serde_json::Value,
) -> Result<()> {
    use std::io::Write;
    let text = match format {
        crate::cli::OutputFormat::Yaml => yaml_text(value),
        _ => format!("{}\n", serde_json::to_string_pretty(value)?),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .context("writing to stdout")?;
    Ok(())
}

/// A value as YAML text ending in a newline.
pub(crate) fn yaml_text(value: &serde_json::Value) -> String {
    let mut text = crate::yaml::to_string(value);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Completion candidates in cobra's protocol (what kubectl's plugin completion expects): for
/// `words` (the last one being completed) the subcommands, flags or flag values that fit, one
/// per line, then `:4` (no file completion) or `:0` (let the shell complete file names).
pub fn complete(words: &[String]) -> String {
    let root = Cli::command();
    let (last, before) = match words.split_last() {
        Some((l, b)) => (l.as_str(), b),
        None => ("", &[][..]),
    };
    let sub = before.iter().find_map(|w| {
        root.get_subcommands()
            .find(|s| s.get_name() == w && !s.is_hide_set())
    });
    let mut out = String::new();
    // A flag's value: its possible values, or file names.
    if let Some(prev) = before.last().filter(|p| p.starts_with('-')) {
        let cmd = sub.unwrap_or(&root);
        let arg = cmd.get_arguments().chain(root.get_arguments()).find(|a| {
            a.get_long().is_some_and(|l| prev == &format!("--{l}"))
                || a.get_short().is_some_and(|s| prev == &format!("-{s}"))
        });
        if let Some(arg) = arg.filter(|a| a.get_action().takes_values()) {
            let values = arg.get_possible_values();
            if values.is_empty() {
                return ":0\n".to_string();
            }
            for v in values.iter().filter(|v| !v.is_hide_set()) {
                if v.get_name().starts_with(last) {
                    out.push_str(v.get_name());
                    out.push('\n');
                }
            }
            out.push_str(":4\n");
            return out;
        }
    }
    match sub {
        Some(cmd) if last.starts_with('-') => {
            let mut seen = std::collections::BTreeSet::new();
            for a in cmd.get_arguments().chain(root.get_arguments()) {
                if a.is_hide_set() {
                    continue;
                }
                if let Some(l) = a.get_long() {
                    let flag = format!("--{l}");
                    if flag.starts_with(last) && seen.insert(flag.clone()) {
                        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                        let help = help.lines().next().unwrap_or_default().to_string();
                        out.push_str(&format!("{flag}\t{help}\n"));
                    }
                }
            }
        }
        Some(_) => return ":0\n".to_string(),
        None => {
            for s in root.get_subcommands().filter(|s| !s.is_hide_set()) {
                if s.get_name().starts_with(last) {
                    let about = s.get_about().map(|h| h.to_string()).unwrap_or_default();
                    out.push_str(&format!("{}\t{about}\n", s.get_name()));
                }
            }
        }
    }
    out.push_str(":4\n");
    out
}

/// Whether to colour output written to stdout.
pub fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    }
}

/// Installed as `kubectl-snaproll`, kubectl runs `kubectl-snaproll ARGS`; clap names the
/// program after argv[0], so name it as the user typed it: `kubectl snaproll` for the plugin,
/// `snaproll` otherwise (whatever the path).
pub fn plugin_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.collect();
    if let Some(first) = args.first_mut() {
        let plugin = std::path::Path::new(first.as_os_str())
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("kubectl-snaproll"));
        *first = OsString::from(if plugin {
            "kubectl snaproll"
        } else {
            "snaproll"
        });
    }
    args
}

/// Whether stderr carries JSON lines (set once by [`init_logging`]): then every line snaproll
/// writes there, warnings and the final error included, is one JSON object.
static JSON_LOGS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

fn json_logs() -> bool {
    JSON_LOGS.get().copied().unwrap_or(false)
}

/// A warning for the user: `warning: …` on a terminal, a WARN record in JSON mode.
pub fn warn(message: &str) {
    if json_logs() {
        tracing::warn!("{message}");
    } else {
        stderr_line(&format!("warning: {message}"));
    }
}

/// A hint or progress line for the user: as is on a terminal, an INFO record in JSON mode.
pub fn note(message: &str) {
    if json_logs() {
        tracing::info!("{message}");
    } else {
        stderr_line(message);
    }
}

/// Writes a line to stderr, ignoring failure: with stderr closed (`2>&1 | head -1`) there is
/// nobody left to tell, and `eprintln!` would panic.
fn stderr_line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(line.as_bytes())
        .and_then(|_| err.write_all(b"\n"));
}

/// Whether a run failed only because its output was closed (`snaproll render | head -1`): an
/// I/O error of kind `BrokenPipe` reached without passing a module's typed error (a broken
/// connection to the API server or a Git remote is wrapped in one). Such a run ends quietly
/// with status 0, as ripgrep does: the reader had all it wanted.
pub fn closed_output(err: &anyhow::Error) -> bool {
    for cause in err.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::BrokenPipe;
        }
        if let Some(json) = cause.downcast_ref::<serde_json::Error>() {
            return json.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe);
        }
        if cause.is::<SpecError>()
            || cause.is::<RenderError>()
            || cause.is::<crate::gitops::GitError>()
            || cause.is::<crate::apply::ApplyError>()
            || cause.is::<crate::apply::Failed>()
            || cause.is::<crate::engine::StepError>()
        {
            return false;
        }
    }
    false
}

/// Prints the error that ends a run: `error: …` lines on a terminal; in JSON mode one ERROR
/// record per line, in the shape of tracing's JSON lines and printed whatever the log level,
/// with the exit code.
pub fn print_error(err: &anyhow::Error, code: u8) {
    for line in error_lines(err) {
        if json_logs() {
            let record = serde_json::json!({
                "timestamp": jiff::Timestamp::now().to_string(),
                "level": "ERROR",
                "fields": {"message": line, "exit_code": code},
            });
            stderr_line(&record.to_string());
        } else {
            stderr_line(&format!("error: {line}"));
        }
    }
}

/// The log format when none is given: JSON without a terminal inside a cluster, else text.
fn default_log_format() -> LogFormat {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if !std::io::stderr().is_terminal() && in_cluster {
        LogFormat::Json
    } else {
        LogFormat::Text
    }
}

/// Prints a command line the parser rejected. Help and version go to stdout as usual; an error
/// is clap's text, or, when the command line or environment asks for JSON logs (or the default
/// picks them), one ERROR record, so a CronJob with a bad flag or environment value still logs
/// only JSON lines. Returns the exit code.
pub fn print_parse_error(err: &clap::Error, args: &[OsString]) -> u8 {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) || err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    {
        let _ = err.print();
        return if err.use_stderr() {
            exit::INVALID
        } else {
            exit::OK
        };
    }
    let words: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let asked = words.iter().enumerate().find_map(|(i, w)| {
        if let Some(v) = w.strip_prefix("--log-format=") {
            return Some(v.to_string());
        }
        (w == "--log-format").then(|| words.get(i + 1).cloned().unwrap_or_default())
    });
    let json = match asked.or_else(|| std::env::var("SNAPROLL_LOG_FORMAT").ok()) {
        Some(v) => v == "json",
        None => default_log_format() == LogFormat::Json,
    };
    if json {
        let _ = JSON_LOGS.set(true);
        let text = err.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        let message = first.strip_prefix("error: ").unwrap_or(first);
        print_error(&anyhow::anyhow!("{message}"), exit::INVALID);
    } else {
        let _ = err.print();
    }
    exit::INVALID
}

/// Sets up tracing on stderr: text on a terminal, JSON lines when asked or when running
/// without a terminal inside a cluster.
pub fn init_logging(global: &GlobalArgs) {
    let format = global.log_format.unwrap_or_else(default_log_format);
    let mut filter = tracing_subscriber::EnvFilter::try_new(&global.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // kube logs an ERROR line per failed attempt; snaproll retries and reports the failure itself
    // as one line, so at the quiet levels kube's lines only repeat it. `--log-level debug` (or a
    // filter naming kube) keeps them.
    if matches!(global.log_level.as_str(), "warn" | "error") {
        filter = filter.add_directive("kube_client=off".parse().expect("a valid directive"));
    }
    // Without `log_internal_errors(false)`, a failed write (stderr closed) is reported with
    // `eprintln!`, which panics.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_target(false);
    let _ = JSON_LOGS.set(format == LogFormat::Json);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .without_time()
            .try_init(),
    };
}

/// The lines to print for an error: each problem of an invalid spec on its own line, otherwise
/// the cause chain joined on one line.
pub fn error_lines(err: &anyhow::Error) -> Vec<String> {
    for cause in err.chain() {
        if let Some(SpecError::Invalid { issues }) = cause.downcast_ref::<SpecError>() {
            return spec::issue_lines(issues);
        }
    }
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        // Skip a cause already spelled out by the layer above.
        if parts.last().is_some_and(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    vec![parts.join(": ")]
}

/// The exit code for an error, from the first typed error in its chain.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    // Whatever layer wraps it (boxed or not), a run that found the rollout's Lease held did
    // nothing.
    if err.chain().any(|c| {
        let apply = c.downcast_ref::<crate::apply::ApplyError>().or_else(|| {
            c.downcast_ref::<Box<crate::apply::ApplyError>>()
                .map(|b| &**b)
        });
        matches!(apply, Some(crate::apply::ApplyError::Locked { .. }))
    }) {
        return exit::LOCKED;
    }
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<crate::engine::EngineError>() {
            use crate::engine::EngineError as E;
            match e {
                E::Spec(_) | E::Templates(_) | E::Generation { .. } | E::Usage(_) => {
                    return exit::INVALID;
                }
                E::Runtime(_) | E::Scratch(_) => return exit::IO,
                E::Connect { .. } | E::WaitTimeout { .. } | E::Events { .. } => {
                    return exit::CLUSTER;
                }
                E::Lease { .. } => return exit::CLUSTER,
                // A boxed source is not found by a downcast of the chain's next link.
                E::Git { source, .. } => return source.exit_code(),
                // The typed error inside decides.
                E::Step { .. } | E::ClusterRead { .. } => continue,
            }
        }
        if cause.is::<SpecError>() || cause.is::<RenderError>() {
            return exit::INVALID;
        }
        if cause.is::<UsageError>() {
            return exit::INVALID;
        }
        if cause.is::<crate::install::InstallError>() {
            return exit::INVALID;
        }
        // Module error types add their mapping here (GitError -> 3, ApplyError -> 4).
        if let Some(e) = cause.downcast_ref::<crate::gitops::GitError>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<crate::engine::StepError>() {
            return match e {
                crate::engine::StepError::Live(_) => exit::CLUSTER,
                crate::engine::StepError::Render(_) => exit::INVALID,
                crate::engine::StepError::Pin(_) => exit::INVALID,
            };
        }
        if cause.is::<crate::apply::ApplyError>() || cause.is::<crate::apply::Failed>() {
            return exit::CLUSTER;
        }
        if cause.is::<std::io::Error>() {
            return exit::IO;
        }
    }
    exit::IO
}

/// The engine options every command shares, from its flags; the command sets what it does.
/// Refuses repeated `--generation` values that contradict each other.
pub(crate) fn engine_options(
    render: &RenderArgs,
    cluster: &crate::cli::ClusterArgs,
    snapshot_timeout: Option<std::time::Duration>,
) -> Result<crate::engine::Options, UsageError> {
    Ok(crate::engine::Options {
        spec: render.spec.file.clone(),
        templates: render.templates.clone(),
        generation: GenerationIds::from_args(&render.generation).map_err(UsageError)?,
        snapshot_timeout,
        cluster: crate::engine::ClusterAccess {
            kubeconfig: cluster.kubeconfig.clone(),
            context: cluster.context.clone(),
        },
        offline: false,
        cluster_required: true,
        start: true,
        git: None,
        write: crate::engine::ClusterWrite::None,
        redecide_attempts: 0,
    })
}

/// One engine step as `diff`, `apply` and `status` run it: the spec's warnings first, then
/// connect, step at `now` (default: the clock) and release the Lease whatever happened; the
/// run's notes are printed.
pub(crate) fn step_once(
    opts: crate::engine::Options,
    now: Option<jiff::Timestamp>,
) -> Result<crate::engine::Report> {
    Ok(step_once_then(opts, now, |_| Ok(()))?.0)
}

/// [`step_once`], then `after` with the engine still connected (before its Lease is released).
pub(crate) fn step_once_then<T>(
    opts: crate::engine::Options,
    now: Option<jiff::Timestamp>,
    after: impl FnOnce(&crate::engine::Engine) -> Result<T, crate::engine::EngineError>,
) -> Result<(crate::engine::Report, T)> {
    let mut engine = crate::engine::Engine::new(opts)?;
    print_warnings(engine.loaded());
    engine.connect()?;
    let result = engine
        .step(now.unwrap_or_else(jiff::Timestamp::now))
        .and_then(|report| Ok((report, after(&engine)?)));
    let released = engine.finish();
    let (report, then) = result?;
    released?;
    for n in report.notes() {
        note(&n);
    }
    Ok((report, then))
}

/// Prints the spec's warnings.
pub(crate) fn print_warnings(loaded: &Loaded) {
    for w in &loaded.warnings {
        warn(&w.to_string());
    }
}

/// One generation of every dataset: `generation`, or the one `--generation DATASET=ID` names.
fn single_plan(rollout: &spec::Rollout, generation: &str, ids: &GenerationIds) -> Plan {
    let mut plan = Plan::single(rollout, generation);
    for (dataset, id) in &ids.by_dataset {
        plan.datasets.insert(
            dataset.clone(),
            vec![crate::render::GenerationPlan::full(id)],
        );
    }
    plan
}

/// A flag combination or value the parser cannot reject on its own.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Loads the spec, prints its warnings, renders one generation of every dataset. With
/// `text_only` the objects carry their YAML only (see [`Renderer::text_only`]).
pub(crate) fn load_and_render(
    args: &RenderArgs,
    text_only: bool,
) -> Result<(Loaded, String, RenderedSet)> {
    load_and_render_to(args, text_only, None)
}

/// [`load_and_render`], handing each object to `sink` as it is rendered when given (see
/// [`Renderer::render_to`]); a failing sink's error is its own I/O error, as writing after
/// the render reported it.
pub(crate) fn load_and_render_to(
    args: &RenderArgs,
    text_only: bool,
    sink: Option<&crate::render::Sink<'_>>,
) -> Result<(Loaded, String, RenderedSet)> {
    let started = std::time::Instant::now();
    let loaded = spec::load(&args.spec.file)?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        datasets = loaded.rollout.spec.datasets.len(),
        "spec loaded and validated"
    );
    for w in &loaded.warnings {
        warn(&w.to_string());
    }
    let ids = GenerationIds::from_args(&args.generation).map_err(UsageError)?;
    ids.check(&loaded.rollout).map_err(UsageError)?;
    let generation = ids.all.clone().unwrap_or_else(|| {
        args.clock
            .now
            .unwrap_or_else(jiff::Timestamp::now)
            .strftime("%Y-%m-%d")
            .to_string()
    });
    let mut renderer = Renderer::new(args.templates.as_deref()).context("loading templates")?;
    if text_only {
        renderer = renderer.text_only();
    }
    let plan = single_plan(&loaded.rollout, &generation, &ids);
    let set = match sink {
        Some(sink) => renderer.render_to(&loaded.rollout, &plan, sink),
        None => renderer.render(&loaded.rollout, &plan),
    };
    let set = match set {
        Err(RenderError::Write { file, source }) => {
            return Err(anyhow::Error::new(source).context(format!("writing {file}")));
        }
        set => set.with_context(|| format!("rendering {}", loaded.file))?,
    };
    tracing::debug!(
        file = %loaded.file,
        %generation,
        datasets = loaded.rollout.spec.datasets.len(),
        objects = set.objects.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rendered and validated"
    );
    Ok((loaded, generation, set))
}
