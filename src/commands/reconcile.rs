//! `reconcile`: render, commit to Git (and push), then optionally apply.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};

use std::time::Instant;

use super::lifecycle::{self, Progress, Source};
use crate::cli::{GitArgs, OutputFormat, ReconcileCmd};
use crate::exit;
use crate::gitops::{self, ChangeKind, Destination, Outcome};
use crate::manifest::{Kind, ObjectRef};
use crate::rollout::Decision;

/// Runs the lifecycle once (observe, decide, render, commit, apply), or with `--wait` again
/// and again until every dataset has settled or the timeout passes.
pub fn reconcile(cmd: &ReconcileCmd, color: bool) -> Result<u8> {
    if !cmd.wait {
        return reconcile_once(cmd, color).map(|(code, _)| code);
    }
    let started = Instant::now();
    let timeout = cmd.timeout.unsigned_abs();
    let progress = Progress::new();
    loop {
        let (code, decisions) = reconcile_once(cmd, color)?;
        if lifecycle::settled(&decisions) {
            progress.finish();
            return Ok(code);
        }
        if started.elapsed() >= timeout {
            progress.finish();
            return Err(WaitTimeout {
                after: cmd.timeout,
                pending: lifecycle::summary_lines(&decisions).join("; "),
            }
            .into());
        }
        progress.update(started.elapsed(), &decisions);
        std::thread::sleep(cmd.poll_interval.unsigned_abs());
    }
}

/// `--wait` ran out of time: the rollout is still in motion (the next run continues it).
#[derive(Debug, thiserror::Error)]
#[error("timed out after {after:#} waiting for the rollout to settle: {pending}")]
pub struct WaitTimeout {
    pub after: jiff::SignedDuration,
    pub pending: String,
}

/// Where the rendered folder goes in Git.
pub(crate) fn destination(git: &GitArgs, rollout: &str) -> Destination {
    Destination {
        repo: git.repo.clone(),
        path: git
            .path
            .clone()
            .unwrap_or_else(|| format!("rollouts/{rollout}")),
        branch: git.branch.clone(),
        remote: git.remote.clone(),
        push: git.push,
        workdir: git.workdir.clone(),
        push_retries: git.push_retries,
        retry_delay: Duration::from_millis(100),
        auth: gitops::Auth::from_env(git.ssh_key.clone()),
    }
}

fn reconcile_once(cmd: &ReconcileCmd, color: bool) -> Result<(u8, Vec<Decision>)> {
    let mut run = lifecycle::prepare(
        &cmd.render,
        &cmd.cluster,
        Source::Reconcile {
            git: &cmd.git,
            offline: cmd.offline,
        },
        cmd.snapshot_timeout.unsigned_abs(),
        cmd.now.unwrap_or_else(jiff::Timestamp::now),
        true,
    )?;
    if cmd.wait && run.cluster.is_none() {
        return Err(super::UsageError(
            "--wait needs cluster access: offline, nothing can be waited for".to_string(),
        )
        .into());
    }
    if cmd.apply && run.cluster.is_none() {
        return Err(super::UsageError(
            "--apply needs cluster access (--kubeconfig, KUBECONFIG, ~/.kube/config or in-cluster config)".to_string(),
        )
        .into());
    }
    let rollout = run.loaded.rollout.metadata.name.clone();
    let set = &run.set;

    // One object per file; kustomization.yaml describes none.
    let described: BTreeMap<String, String> = set
        .objects
        .iter()
        .map(|o| (o.id.file_name(), o.id.to_string()))
        .collect();
    let files: Vec<gitops::File> = set
        .files()
        .into_iter()
        .map(|(name, content)| gitops::File {
            objects: described.get(&name).cloned().into_iter().collect(),
            path: name,
            content: content.into_bytes(),
        })
        .collect();

    let dest = destination(&cmd.git, &rollout);
    let describe = |_: &str, content: &[u8]| describe_removed(content);
    let req = gitops::Request {
        files: &files,
        rollout: &rollout,
        generation: &run.generation,
        author_name: cmd.git.author_name.as_deref(),
        author_email: cmd.git.author_email.as_deref(),
        describe_removed: Some(&describe),
        fingerprint: None,
    };

    // The repository an offline run read is the one committed to; with a cluster, Git is
    // opened here for the first time.
    let outcome = match run.checkout.take() {
        Some(checkout) => Ok(checkout),
        None => gitops::Checkout::open(&dest),
    }
    .and_then(|checkout| {
        if cmd.dry_run {
            checkout.preview(&req)
        } else {
            checkout.publish(&req)
        }
    })
    .with_context(|| format!("reconcile of rollout {rollout}"))?;

    let mut out = std::io::stdout().lock();
    match cmd.output {
        OutputFormat::Json => {
            let mut v = to_json(&outcome, cmd.dry_run);
            v["generations"] = lifecycle::to_json(&run.decisions);
            writeln!(out, "{v}")
        }
        OutputFormat::Text if cmd.dry_run => write_preview(&mut out, &outcome, color),
        OutputFormat::Text => writeln!(out, "{}", text_line(&outcome)),
    }
    .and_then(|_| {
        if cmd.output == OutputFormat::Text && !cmd.wait {
            for line in lifecycle::summary_lines(&run.decisions) {
                writeln!(out, "  {line}")?;
            }
        }
        out.flush()
    })
    .context("writing to stdout")?;
    drop(out);

    let mut code = exit::OK;
    if cmd.apply {
        let result = lifecycle::apply(
            &run,
            cmd.apply_flags.prune,
            cmd.apply_flags.force_conflicts,
            cmd.dry_run,
        );
        code = super::cluster::report_apply(&result, cmd.output)?;
        result.map_err(|f| anyhow::Error::new(*f))?;
    }
    if lifecycle::any_failed(&run.decisions) {
        code = exit::CHANGES;
    }
    Ok((code, run.decisions))
}

/// `Kind/name (namespace)` of a manifest being removed, read from its YAML; the file is
/// described by name when it is not one snaproll would render.
fn describe_removed(content: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(content) else {
        return Vec::new();
    };
    let Ok(value) = crate::yaml::from_str(text) else {
        return Vec::new();
    };
    let field = |ptr: &str| value.pointer(ptr).and_then(|v| v.as_str());
    match (
        field("/kind").and_then(Kind::from_kind),
        field("/metadata/name"),
    ) {
        (Some(kind), Some(name)) => {
            vec![ObjectRef::new(kind, field("/metadata/namespace"), name).to_string()]
        }
        _ => Vec::new(),
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
                for line in text.lines() {
                    let painted = match line.chars().next() {
                        Some('+') if !line.starts_with("+++") => paint("32", line),
                        Some('-') if !line.starts_with("---") => paint("31", line),
                        Some('@') => paint("36", line),
                        _ => line.to_string(),
                    };
                    writeln!(out, "{painted}")?;
                }
            }
        }
    }
    Ok(())
}
