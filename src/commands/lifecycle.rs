//! How the rollout's decisions are shown: `status`'s table and JSON, and `--wait`'s progress.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cli::{ClusterArgs, OutputFormat, RenderArgs};
use crate::engine;
use crate::rollout::Decision;

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
                d.waiting.as_deref().unwrap_or("no generation yet").into(),
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
        if let Some(switch) = &d.service {
            let detail = match (&switch.selects, &switch.next) {
                (Some(a), Some(b)) if a != b => {
                    format!("the Service selects generation {a}; switches to {b}")
                }
                (Some(a), _) => format!("the Service selects generation {a} only"),
                (None, Some(b)) => format!("the Service switches to generation {b}"),
                (None, None) => "the Service selects no generation yet".to_string(),
            };
            rows.push([
                d.dataset.clone(),
                switch.selects.clone().unwrap_or_else(|| "-".into()),
                "service".into(),
                "-".into(),
                detail,
            ]);
        }
        for f in &d.foreign {
            rows.push([
                d.dataset.clone(),
                "-".into(),
                "foreign".into(),
                "-".into(),
                format!("{f} has the rollout's labels but is not in its ApplySet; ignored"),
            ]);
        }
    }
    columns(&rows)
}

/// Rows as kubectl prints them: the first four columns padded to their widest cell, the last
/// (free text) as it is.
fn columns(rows: &[[String; 5]]) -> String {
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

/// `status --events`: kubectl's `get events` columns, oldest first.
fn events_table(events: &[crate::events::Recent]) -> String {
    if events.is_empty() {
        return "No events (Events expire after the API server's --event-ttl, 1h by default).\n"
            .to_string();
    }
    let mut rows = vec![[
        "TIME".to_string(),
        "TYPE".to_string(),
        "REASON".to_string(),
        "OBJECT".to_string(),
        "MESSAGE".to_string(),
    ]];
    for e in events {
        rows.push([
            e.time.clone().unwrap_or_else(|| "-".into()),
            e.type_.clone(),
            e.reason.clone(),
            e.object.clone(),
            e.note.clone(),
        ]);
    }
    columns(&rows)
}

/// The decisions as JSON (`-o json`).
pub(crate) fn to_json(decisions: &[Decision]) -> Value {
    serde_json::to_value(decisions).expect("decisions serialise")
}

/// `status -f SPEC`: reads the cluster, reports, changes nothing.
pub fn status(cmd: &crate::cli::StatusCmd) -> Result<u8> {
    let render = RenderArgs {
        spec: cmd.spec.clone(),
        generation: Vec::new(),
        templates: None,
        clock: cmd.clock.clone(),
    };
    let cluster: &ClusterArgs = &cmd.cluster;
    let opts = engine::Options {
        start: false,
        ..super::engine_options(&render, cluster, cmd.snapshot.timeout)?
    };
    let (report, events) = super::step_once_then(opts, cmd.clock.now, |engine| match cmd.events {
        Some(limit) => engine.recent_events(limit),
        None => Ok(None),
    })?;
    // With --events the data is an object holding both lists; without, the decisions alone
    // (the shape scripts already read).
    let data = match &events {
        Some(events) => serde_json::json!({
            "decisions": to_json(&report.decisions),
            "events": events,
        }),
        None => to_json(&report.decisions),
    };
    let text = match cmd.output.format {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&data).expect("JSON")),
        OutputFormat::Yaml => super::yaml_text(&data),
        OutputFormat::Text => {
            let mut text = table(&report.decisions);
            if let Some(events) = &events {
                text.push('\n');
                text.push_str(&events_table(events));
            }
            text
        }
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .context("writing to stdout")?;
    Ok(if report.failed() {
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
        let line = engine::summary_lines(decisions).join(" | ");
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
