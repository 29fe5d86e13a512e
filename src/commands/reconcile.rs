//! `reconcile`: the main job. The engine observes, decides, renders, commits to Git (and
//! pushes), then applies when asked; without `--repo` it applies only (push mode, no Git).

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};

use super::lifecycle::{self, Progress};
use crate::cli::{GitArgs, OutputFormat, ReconcileCmd};
use crate::engine::{self, ClusterWrite, Engine, GitTarget, Report};
use crate::exit;
use crate::gitops::{self, ChangeKind, Destination, Outcome};

/// Runs the engine once, or with `--wait` again and again until every dataset has settled
/// or the timeout passes.
pub fn reconcile(cmd: &ReconcileCmd, color: bool) -> Result<u8> {
    let git = cmd.git.repo.is_some();
    // Without Git the only thing a reconcile can do is apply: push mode.
    let apply = cmd.apply || !git;
    let opts = engine::Options {
        write: if apply {
            ClusterWrite::Apply {
                prune: cmd.apply_flags.prune,
                force_conflicts: cmd.apply_flags.force_conflicts,
                dry_run: cmd.dry_run.is_on(),
            }
        } else {
            ClusterWrite::None
        },
        git: cmd.git.repo.as_ref().map(|_| GitTarget {
            dest: destination(&cmd.git),
            author_name: cmd.git.author_name.clone(),
            author_email: cmd.git.author_email.clone(),
            preview: cmd.dry_run.is_on(),
        }),
        offline: cmd.offline,
        cluster_required: !git,
        start: true,
        redecide_attempts: cmd.git.push_retries,
        ..super::engine_options(&cmd.render, &cmd.cluster, cmd.snapshot.timeout)?
    };
    if let (true, false, Some(target)) = (opts.offline, apply, &opts.git) {
        // No cluster and, with a local repository that does not push, no network at all.
        gitops::local_only(&target.dest);
    }
    let spec = engine::read_spec(&opts)?;
    // An offline run whose inputs match the head's commit stops before parsing the spec.
    if !cmd.wait
        && let Some(report) = engine::unchanged(&opts, &spec, clock(cmd))
    {
        return finish(report, cmd, color);
    }
    let mut engine = Engine::with_spec(opts, spec)?;
    super::print_warnings(engine.loaded());
    engine.connect()?;
    let result = run(&mut engine, cmd, color);
    let released = engine.finish();
    let code = result?;
    released?;
    Ok(code)
}

/// The run's clock: `--now`, or the time.
fn clock(cmd: &ReconcileCmd) -> jiff::Timestamp {
    cmd.render.clock.now.unwrap_or_else(jiff::Timestamp::now)
}

fn run(engine: &mut Engine, cmd: &ReconcileCmd, color: bool) -> Result<u8> {
    let clock = || clock(cmd);
    let report = if cmd.wait {
        let progress = Progress::new();
        let report = engine.wait(
            clock,
            cmd.timeout,
            cmd.poll_interval.unsigned_abs(),
            |elapsed, r| progress.update(elapsed, &r.decisions),
        );
        progress.finish();
        report?
    } else {
        engine.step(clock())?
    };
    finish(report, cmd, color)
}

/// Prints the report (notes, result, cluster changes) and picks the exit code.
fn finish(mut report: Report, cmd: &ReconcileCmd, color: bool) -> Result<u8> {
    for n in report.notes() {
        super::note(&n);
    }
    print(&report, cmd, color).context("writing to stdout")?;
    let failed = report.failed();
    let cluster = report.cluster.take();
    // The process exits next: freeing the rendered objects one allocation at a time (tens of
    // thousands for 1,000 datasets) took about a twentieth of a run, for nothing.
    std::mem::forget(report);
    if let Some(result) = cluster {
        super::cluster::print_changes(&result, cmd.output.format, false)?;
        result.map_err(|f| anyhow::Error::new(*f))?;
    }
    Ok(if failed { exit::CHANGES } else { exit::OK })
}

fn print(report: &Report, cmd: &ReconcileCmd, color: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match (&report.git, cmd.output.format) {
        (Some(outcome), OutputFormat::Json | OutputFormat::Yaml) => {
            let mut v = to_json(outcome, cmd.dry_run.is_on());
            v["generations"] = lifecycle::to_json(&report.decisions);
            write_data(&mut out, cmd.output.format, &v)?;
        }
        (Some(outcome), OutputFormat::Text) if cmd.dry_run.is_on() => {
            write_preview(&mut out, outcome, color)?
        }
        (Some(outcome), OutputFormat::Text) => writeln!(out, "{}", text_line(outcome))?,
        (None, OutputFormat::Json | OutputFormat::Yaml) => {
            let v = serde_json::json!({
                "dryRun": cmd.dry_run.is_on(),
                "generations": lifecycle::to_json(&report.decisions),
            });
            write_data(&mut out, cmd.output.format, &v)?;
        }
        (None, OutputFormat::Text) => {}
    }
    if cmd.output.format == OutputFormat::Text && !cmd.wait {
        for line in engine::summary_lines(&report.decisions) {
            writeln!(out, "  {line}")?;
        }
    }
    out.flush()
}

/// Where the rendered folder goes in Git (an empty path: the engine's default,
/// `rollouts/<rollout>`).
pub(crate) fn destination(git: &GitArgs) -> Destination {
    Destination {
        repo: git.repo.clone().unwrap_or_default(),
        path: git.path.clone().unwrap_or_default(),
        branch: git.branch.clone(),
        remote: git.remote.clone(),
        push: git.push,
        workdir: git.workdir.clone(),
        push_retries: git.push_retries,
        retry_delay: Duration::from_millis(100),
        auth: gitops::Auth::from_env(git.ssh_key.clone()),
    }
}

/// The one-line result: `committed <sha> to <branch>: <summary>` or `no changes: …`.
fn text_line(o: &Outcome) -> String {
    let push = if o.pushed { " and pushed" } else { "" };
    match o.commit {
        Some(c) => format!(
            "committed {}{push} to {}: {}",
            gitops::short(c),
            o.branch,
            o.summary
        ),
        None => format!(
            "no changes: {} is up to date at {}{}",
            o.path,
            o.head
                .map(gitops::short)
                .unwrap_or("(no commits)".to_string()),
            if o.pushed { " (pushed)" } else { "" }
        ),
    }
}

/// The run's report: one JSON line (as before), or a YAML document ending in `---` so the
/// change set that may follow is a second document.
fn write_data(
    out: &mut impl Write,
    format: OutputFormat,
    v: &serde_json::Value,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Yaml => writeln!(out, "{}---", super::yaml_text(v)),
        _ => writeln!(out, "{v}"),
    }
}

fn to_json(o: &Outcome, dry_run: bool) -> serde_json::Value {
    let paths = |k: ChangeKind| -> Vec<&str> {
        o.changes
            .iter()
            .filter(|c| c.kind == k)
            .map(|c| c.path.as_str())
            .collect()
    };
    serde_json::json!({
        "dryRun": dry_run,
        "commit": o.commit.map(|c| c.to_string()),
        "head": o.head.map(|c| c.to_string()),
        "branch": o.branch,
        "path": o.path,
        "summary": o.summary,
        "added": paths(ChangeKind::Added),
        "changed": paths(ChangeKind::Changed),
        "removed": paths(ChangeKind::Removed),
        "pushed": o.pushed,
        "pushAttempts": o.push_attempts,
    })
}

/// The file-level diff of a dry run: added and removed files by name, changed files as a
/// unified diff.
fn write_preview(out: &mut impl Write, o: &Outcome, color: bool) -> std::io::Result<()> {
    if o.changes.is_empty() {
        writeln!(
            out,
            "no changes: {} is up to date{}",
            o.path,
            o.head
                .map(|h| format!(" at {}", gitops::short(h)))
                .unwrap_or_default()
        )?;
        return Ok(());
    }
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    writeln!(out, "would commit to {}: {}", o.branch, o.summary)?;
    for c in &o.changes {
        match c.kind {
            ChangeKind::Added => writeln!(out, "{}", paint("32", &format!("added:   {}", c.path)))?,
            ChangeKind::Removed => {
                writeln!(out, "{}", paint("31", &format!("removed: {}", c.path)))?
            }
            ChangeKind::Changed => {
                writeln!(out, "{}", paint("33", &format!("changed: {}", c.path)))?;
                let old = String::from_utf8_lossy(c.old.as_deref().unwrap_or_default());
                let new = String::from_utf8_lossy(c.new.as_deref().unwrap_or_default());
                let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
                let text = diff
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("a/{}", c.path), &format!("b/{}", c.path))
                    .to_string();
                write!(out, "{}", crate::apply::compare::paint_diff(&text, color))?;
            }
        }
    }
    Ok(())
}
