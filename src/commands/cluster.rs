//! `diff`, `apply` and `status`: the commands that read and write only the cluster. `diff` and
//! `apply` run the same engine as `reconcile` without Git: they act on what the rollout
//! decides this run, never on a whole generation at once.

use std::io::Write;

use anyhow::Result;

use crate::apply::{ChangeSet, Failed};
use crate::cli::{ApplyCmd, DiffCmd, OutputFormat, StatusCmd};
use crate::engine::{self, ClusterWrite};
use crate::exit;

pub fn diff(cmd: &DiffCmd, color: bool) -> Result<u8> {
    let opts = engine::Options {
        write: ClusterWrite::Diff {
            prune: cmd.prune,
            color: color && cmd.output.format == OutputFormat::Text,
        },
        ..super::engine_options(&cmd.render, &cmd.cluster, cmd.snapshot.timeout)?
    };
    let report = super::step_once(opts, cmd.render.clock.now)?;
    let result = report.cluster.expect("diff compares with the cluster");
    let code = print_changes(&result, cmd.output.format, true)?;
    result.map_err(|f| anyhow::Error::new(*f))?;
    Ok(code)
}

pub fn apply(cmd: &ApplyCmd, _color: bool) -> Result<u8> {
    let opts = engine::Options {
        write: ClusterWrite::Apply {
            prune: cmd.apply.prune,
            force_conflicts: cmd.apply.force_conflicts,
            dry_run: cmd.dry_run.is_on(),
        },
        ..super::engine_options(&cmd.render, &cmd.cluster, cmd.snapshot.timeout)?
    };
    let report = super::step_once(opts, cmd.render.clock.now)?;
    let failed = report.failed();
    let result = report.cluster.expect("apply writes the cluster");
    print_changes(&result, cmd.output.format, false)?;
    result.map_err(|f| anyhow::Error::new(*f))?;
    if cmd.output.format == OutputFormat::Text {
        let mut out = std::io::stdout().lock();
        for line in engine::summary_lines(&report.decisions) {
            writeln!(out, "  {line}")?;
        }
        out.flush()?;
    }
    Ok(if failed { exit::CHANGES } else { exit::OK })
}

pub fn status(cmd: &StatusCmd, _color: bool) -> Result<u8> {
    super::lifecycle::status(cmd)
}

/// Prints a change set (also the partial one of a failed run) and returns diff's exit code.
pub(crate) fn print_changes(
    result: &Result<ChangeSet, Box<Failed>>,
    output: OutputFormat,
    diffs: bool,
) -> Result<u8> {
    let changes = match result {
        Ok(c) => c,
        Err(f) => &f.changes,
    };
    let write = || -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        match output {
            OutputFormat::Json => {
                serde_json::to_writer_pretty(&mut out, changes)?;
                writeln!(out)?;
            }
            OutputFormat::Yaml => {
                let value = serde_json::to_value(changes).map_err(std::io::Error::other)?;
                out.write_all(super::yaml_text(&value).as_bytes())?;
            }
            OutputFormat::Text => {
                if diffs {
                    for c in &changes.changes {
                        if let Some(d) = &c.diff {
                            out.write_all(d.as_bytes())?;
                        }
                    }
                }
                out.write_all(changes.to_text().as_bytes())?;
            }
        }
        out.flush()
    };
    match write() {
        // A failed run reports its own failure (and exit code), even when stdout is closed.
        Err(_) if result.is_err() => {}
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    Ok(if changes.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    })
}
