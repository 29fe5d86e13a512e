//! The file-level difference between the branch and the request, and the commit message.

use std::collections::{BTreeMap, BTreeSet};

use git2::{ObjectType, Oid};

use super::*;

/// The file-level difference between the branch's folder and the request, computed without
/// writing anything.
pub(super) struct Plan {
    pub(super) changes: Vec<FileChange>,
    /// Request files with their blob ids, by path relative to the folder.
    pub(super) new: Vec<(usize, Oid)>,
}

/// How many files of each kind a commit message lists. A first commit of 1,000 datasets listed
/// all 5,001 (400 KB), which every later run read and hash-checked to find the fingerprint,
/// and nobody reads in `git log`; the commit itself lists every file.
pub(super) const MESSAGE_LIST_LIMIT: usize = 100;

impl Plan {
    pub(super) fn new(
        folder: &str,
        req: &Request<'_>,
        old: &BTreeMap<String, (Oid, i32)>,
        keep_content: bool,
    ) -> Plan {
        let folder = folder.trim_end_matches('/');
        let mut changes = Vec::new();
        let mut new = Vec::with_capacity(req.files.len());
        let mut present = BTreeSet::new();
        for (i, f) in req.files.iter().enumerate() {
            let oid = Oid::hash_object(ObjectType::Blob, &f.content).expect("hashing in memory");
            new.push((i, oid));
            present.insert(f.path.as_str());
            let kind = match old.get(&f.path) {
                None => ChangeKind::Added,
                Some(&(o, mode)) if o == oid && mode == MODE_FILE => continue,
                Some(_) => ChangeKind::Changed,
            };
            changes.push(FileChange {
                path: format!("{folder}/{}", f.path),
                kind,
                objects: f.objects.clone(),
                old: None,
                new: keep_content.then(|| f.content.clone()),
            });
        }
        let in_scope = |p: &str| req.scope.is_none_or(|s| s.contains(p));
        for p in old
            .keys()
            .filter(|p| !present.contains(p.as_str()) && in_scope(p))
        {
            changes.push(FileChange {
                path: if p.is_empty() {
                    folder.to_string()
                } else {
                    format!("{folder}/{p}")
                },
                kind: ChangeKind::Removed,
                objects: Vec::new(),
                old: None,
                new: None,
            });
        }
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        Plan { changes, new }
    }

    /// Counts of objects (files without object descriptions are listed but not counted).
    pub(super) fn summary(&self, req: &Request<'_>) -> String {
        let count = |k: ChangeKind| -> usize {
            self.changes
                .iter()
                .filter(|c| c.kind == k)
                .map(|c| c.objects.len())
                .sum()
        };
        format!(
            "snaproll: {} {}: {} added, {} changed, {} removed",
            req.rollout,
            req.generation,
            count(ChangeKind::Added),
            count(ChangeKind::Changed),
            count(ChangeKind::Removed)
        )
    }

    /// The commit message: the summary, the changed files by kind (at most
    /// [`MESSAGE_LIST_LIMIT`] of each), the folder and the fingerprint trailers.
    pub(super) fn message(
        &self,
        req: &Request<'_>,
        fingerprint: Option<&str>,
        folder: &str,
        folder_id: Option<Oid>,
    ) -> String {
        let mut m = self.summary(req);
        m.push_str("\n\n");
        for (kind, title) in [
            (ChangeKind::Added, "Added"),
            (ChangeKind::Changed, "Changed"),
            (ChangeKind::Removed, "Removed"),
        ] {
            let items: Vec<&FileChange> = self.changes.iter().filter(|c| c.kind == kind).collect();
            if items.is_empty() {
                continue;
            }
            m.push_str(title);
            m.push_str(":\n");
            for c in items.iter().take(MESSAGE_LIST_LIMIT) {
                let file = c.path.rsplit('/').next().unwrap_or(&c.path);
                if c.objects.is_empty() {
                    m.push_str(&format!("- {file}\n"));
                }
                for o in &c.objects {
                    m.push_str(&format!("- {o} [{file}]\n"));
                }
            }
            if items.len() > MESSAGE_LIST_LIMIT {
                m.push_str(&format!(
                    "- and {} more files (`git show --stat` lists them all)\n",
                    items.len() - MESSAGE_LIST_LIMIT
                ));
            }
        }
        m.push_str(&format!("\nPath: {folder}\n"));
        if let Some(fp) = fingerprint {
            let tree = folder_id
                .map(|o| o.to_string())
                .unwrap_or("none".to_string());
            m.push_str(&format!(
                "{FINGERPRINT_TRAILER}: {fp}\n{FOLDER_TRAILER}: {tree}\n"
            ));
        }
        m
    }

    pub(super) fn outcome(
        self,
        req: &Request<'_>,
        commit: Option<Oid>,
        head: Option<Oid>,
        branch: String,
        path: &str,
    ) -> Outcome {
        Outcome {
            commit,
            head,
            branch,
            path: path.to_string(),
            summary: self.summary(req),
            changes: self.changes,
            pushed: false,
            push_attempts: 0,
        }
    }
}
