//! The change set: what a run did (or, for diff and dry-run, would do) to each object.

use std::fmt::Write as _;

use serde::Serialize;

use crate::manifest::ObjectRef;

/// What happened to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Deleted,
    /// Not touched on purpose (a prune guard, an earlier failure); see the reason.
    Skipped,
    /// The request failed; see the reason.
    Failed,
}

impl Action {
    /// kubectl-style verb for text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Deleted => "deleted",
            Action::Skipped => "skipped",
            Action::Failed => "failed",
        }
    }
}

/// One object's entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub action: Action,
    /// Why: what differs for `configured`, the guard for `skipped`, the error for `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The unified diff (diff command only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl Change {
    pub fn new(id: &ObjectRef, action: Action, reason: Option<String>) -> Self {
        Change {
            kind: id.kind.as_str().to_string(),
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            action,
            reason,
            diff: None,
        }
    }

    /// `Kind/name (namespace)`.
    pub fn object(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{} ({ns})", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

/// The result of an apply, diff, prune or dry-run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSet {
    /// Nothing was written: `diff` or `apply --dry-run`.
    pub dry_run: bool,
    /// The ApplySet id the members carry.
    pub applyset: String,
    /// Per object, in the order the run handled them (apply order, then prune order).
    pub changes: Vec<Change>,
    /// The inventory (ApplySet parent) change, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Change>,
    /// Counts per action.
    pub summary: Summary,
    /// The error that stopped the run, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counts per action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub created: usize,
    pub configured: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub skipped: usize,
    pub failed: usize,
}

impl ChangeSet {
    pub fn push(&mut self, change: Change) {
        match change.action {
            Action::Created => self.summary.created += 1,
            Action::Configured => self.summary.configured += 1,
            Action::Unchanged => self.summary.unchanged += 1,
            Action::Deleted => self.summary.deleted += 1,
            Action::Skipped => self.summary.skipped += 1,
            Action::Failed => self.summary.failed += 1,
        }
        self.changes.push(change);
    }

    /// Whether the run changed (or would change) anything in the cluster.
    pub fn has_changes(&self) -> bool {
        self.summary.created + self.summary.configured + self.summary.deleted > 0
            || self
                .inventory
                .as_ref()
                .is_some_and(|c| c.action != Action::Unchanged)
    }

    /// Entries with one action.
    pub fn with_action(&self, action: Action) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(move |c| c.action == action)
    }

    /// The entry of one object, if any.
    pub fn get(&self, id: &ObjectRef) -> Option<&Change> {
        self.changes.iter().find(|c| {
            c.kind == id.kind.as_str() && c.name == id.name && c.namespace == id.namespace
        })
    }

    /// kubectl-like lines (`statefulset.apps/consumer-2021-07-16 created`) for changed,
    /// skipped and failed objects, then a one-line summary. Unchanged objects are only counted,
    /// so a no-op run over 1,000 datasets prints one line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let suffix = if self.dry_run { " (dry run)" } else { "" };
        if let Some(inv) = &self.inventory
            && inv.action != Action::Unchanged
        {
            let _ = writeln!(
                out,
                "{} {}{suffix}{}",
                inv.object(),
                inv.action.as_str(),
                inv.reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
        }
        for c in &self.changes {
            if c.action == Action::Unchanged {
                continue;
            }
            let _ = write!(out, "{} {}{suffix}", c.object(), c.action.as_str());
            if let Some(r) = &c.reason
                && c.action != Action::Created
            {
                let _ = write!(out, ": {r}");
            }
            out.push('\n');
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "{}{} created, {} configured, {} unchanged, {} deleted, {} skipped{}",
            if self.dry_run { "Would be: " } else { "" },
            s.created,
            s.configured,
            s.unchanged,
            s.deleted,
            s.skipped,
            if s.failed > 0 {
                format!(", {} failed", s.failed)
            } else {
                String::new()
            }
        );
        out
    }
}
