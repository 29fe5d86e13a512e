//! What an apply would change, with a unified diff per changed object.

use std::collections::BTreeMap;

use serde_json::Value;

use super::apply::planned_change;
use super::{
    Action, ApiCause, Change, ChangeSet, DiffOptions, Failed, LiveState, Manager, PruneOptions,
    compare,
};
use crate::manifest::{Kind, ObjectRef};
use crate::render::RenderedSet;

impl Manager {
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
        let fail = Failed::boxed;
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
        let mut results: BTreeMap<usize, Result<Value, ApiCause>> = self
            .dry_run_each(&self.writes(&plan), opts.force_conflicts)
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
}

/// `kind.group/namespace/name` for diff headers.
fn object_title(id: &ObjectRef) -> String {
    let kind = id.kind.group_kind();
    match &id.namespace {
        Some(ns) => format!("{kind}/{ns}/{}", id.name),
        None => format!("{kind}/{}", id.name),
    }
}
