//! Writing blobs, trees and the commit, moving the branch, and pushing with retries.

use super::paths::rel_key;
use std::collections::{BTreeMap, BTreeSet};

use git2::{ErrorClass, ErrorCode, ObjectType, Oid, Signature, Tree};

use super::checkout::Session;
use super::plan::Plan;
use super::remote::PushResult;
use super::*;

/// Longest pause between two push attempts.
pub(super) const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// From this many new blobs on, a commit writes them as one pack rather than loose objects
/// (git's own `transfer.unpackLimit` default draws the same line for fetched objects).
pub(super) const PACK_MIN_OBJECTS: usize = 100;

/// A version-2 pack stream of `blobs`, undeltified, each zlib-compressed at level 1 (git's
/// `core.looseCompression` default) with one compressor reused throughout, ending with the
/// SHA-1 of everything before it (see gitformat-pack(5)).
pub(super) fn pack_stream(blobs: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    const BLOB: usize = 3;
    let total: usize = blobs.iter().map(|b| b.len()).sum();
    let mut out = Vec::with_capacity(total / 2 + blobs.len() * 16 + 32);
    out.extend_from_slice(b"PACK");
    out.extend_from_slice(&2u32.to_be_bytes());
    let count = u32::try_from(blobs.len()).map_err(std::io::Error::other)?;
    out.extend_from_slice(&count.to_be_bytes());
    let mut z = Compress::new(Compression::fast(), true);
    for data in blobs {
        // Object header: type and size, 4 bits of size first, then 7 bits per byte.
        let mut size = data.len();
        let mut byte = ((BLOB << 4) | (size & 0x0f)) as u8;
        size >>= 4;
        while size > 0 {
            out.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        out.push(byte);
        z.reset();
        loop {
            out.reserve(data.len() / 2 + 64);
            let consumed = z.total_in() as usize;
            let status = z
                .compress_vec(&data[consumed..], &mut out, FlushCompress::Finish)
                .map_err(std::io::Error::other)?;
            if status == Status::StreamEnd {
                break;
            }
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &out);
    out.extend_from_slice(digest.as_ref());
    Ok(out)
}

impl Session {
    pub(super) fn signature(&self, req: &Request<'_>) -> Result<Signature<'static>, GitError> {
        let config = self.repo.config().ok();
        let from_config = |key: &str| {
            config
                .as_ref()
                .and_then(|c| c.get_string(key).ok())
                .filter(|v| !v.is_empty())
        };
        let name = req
            .author_name
            .map(str::to_string)
            .or_else(|| from_config("user.name"))
            .unwrap_or(FALLBACK_NAME.to_string());
        let email = req
            .author_email
            .map(str::to_string)
            .or_else(|| from_config("user.email"))
            .unwrap_or(FALLBACK_EMAIL.to_string());
        Signature::now(&name, &email).map_err(|e| GitError::InvalidInput {
            what: "author",
            value: format!("{name} <{email}>"),
            reason: self.scrub.err(e).message,
        })
    }

    /// Writes the new folder into `parent`'s tree and commits it (no ref moves). `None` when
    /// the tree would not change; in that case nothing was written.
    pub(super) fn build(
        &self,
        req: &Request<'_>,
        comps: &[String],
        parent: Option<Oid>,
    ) -> Result<(Plan, Option<Oid>), GitError> {
        let parent_tree = self.tree_of(parent)?;
        let old = self.read_folder(parent_tree.as_ref(), comps)?;
        let mut plan = Plan::new(&self.dest.path, req, &old, false);
        if plan.changes.is_empty() {
            return Ok((plan, None));
        }
        if let Some(describe) = req.describe_removed {
            for c in plan
                .changes
                .iter_mut()
                .filter(|c| c.kind == ChangeKind::Removed)
            {
                if let Some(&(oid, _)) = old.get(rel_key(&self.dest.path, &c.path)) {
                    let content = self.blob_content(oid)?;
                    c.objects = describe(&c.path, &content);
                }
            }
        }
        let t_blobs = std::time::Instant::now();
        let changed: BTreeSet<&str> = plan.changes.iter().map(|c| c.path.as_str()).collect();
        let folder = self.dest.path.trim_end_matches('/');
        // Write only the blobs that are new; the others are in the parent tree already.
        let mut entries: Vec<(&str, Oid)> = Vec::with_capacity(plan.new.len());
        let mut new_blobs: BTreeMap<Oid, &File> = BTreeMap::new();
        for &(i, oid) in &plan.new {
            let f = &req.files[i];
            if changed.contains(format!("{folder}/{}", f.path).as_str()) {
                new_blobs.insert(oid, f);
            }
            entries.push((f.path.as_str(), oid));
        }
        if let Some(scope) = req.scope {
            // A partial request: the committed files outside its scope stay as they are.
            let given: BTreeSet<&str> = req.files.iter().map(|f| f.path.as_str()).collect();
            for (path, &(oid, _)) in &old {
                if !scope.contains(path) && !given.contains(path.as_str()) && !path.is_empty() {
                    entries.push((path.as_str(), oid));
                }
            }
        }
        if new_blobs.len() >= PACK_MIN_OBJECTS {
            let blobs: Vec<&[u8]> = new_blobs.values().map(|f| f.content.as_slice()).collect();
            self.write_pack(&blobs)?;
        } else {
            for (oid, f) in new_blobs {
                let written = self
                    .repo
                    .blob(&f.content)
                    .map_err(self.repo_err(format!("writing {}", f.path)))?;
                debug_assert_eq!(written, oid);
            }
        }
        tracing::debug!(elapsed = ?t_blobs.elapsed(), "blobs written");
        let sub = if entries.is_empty() {
            None
        } else {
            Some(self.write_dir(&entries)?)
        };
        let root = self
            .splice(parent_tree.as_ref(), comps, sub)?
            .map(Ok)
            .unwrap_or_else(|| {
                self.repo
                    .treebuilder(None)
                    .and_then(|tb| tb.write())
                    .map_err(self.repo_err("writing the root tree"))
            })?;
        if parent_tree.as_ref().map(|t| t.id()) == Some(root) {
            // Only mode differences we do not model: nothing to commit.
            plan.changes.clear();
            return Ok((plan, None));
        }
        let tree = self
            .repo
            .find_tree(root)
            .map_err(self.repo_err("reading the new tree"))?;
        let sig = self.signature(req)?;
        let fingerprint = req
            .fingerprint
            .filter(|_| req.fingerprint_check.is_none_or(|vouch| vouch()));
        let parents = match parent {
            Some(p) => vec![
                self.repo
                    .find_commit(p)
                    .map_err(self.repo_err("reading the parent commit"))?,
            ],
            None => vec![],
        };
        let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let commit = self
            .repo
            .commit(
                None,
                &sig,
                &sig,
                &plan.message(req, fingerprint, folder, sub),
                &tree,
                &parent_refs,
            )
            .map_err(self.repo_err("writing the commit"))?;
        Ok((plan, Some(commit)))
    }

    /// Writes `blobs` into the object database as one pack (`objects/pack/pack-*.{pack,idx}`),
    /// as `git fast-import` does, instead of one loose object each: one file instead of
    /// thousands, and one zlib compressor reused for every object instead of a zlib stream set
    /// up and torn down per object (which, with the allocator trimming the heap after each,
    /// was most of a large first commit). libgit2's indexer writes the index and checks the
    /// stream (every object's id is computed again, the trailer checksum verified), and the
    /// pack is only renamed into place once complete, so a crash leaves no partial pack.
    pub(super) fn write_pack(&self, blobs: &[&[u8]]) -> Result<(), GitError> {
        let started = std::time::Instant::now();
        let odb_err = |e: std::io::Error| GitError::Repo {
            action: "writing a pack".to_string(),
            source: Libgit2 {
                code: ErrorCode::GenericError,
                class: ErrorClass::Odb,
                message: e.to_string(),
            },
        };
        let stream = pack_stream(blobs).map_err(odb_err)?;
        let odb = self
            .repo
            .odb()
            .map_err(self.repo_err("opening the object database"))?;
        let mut writer = odb.packwriter().map_err(self.repo_err("writing a pack"))?;
        std::io::Write::write_all(&mut writer, &stream).map_err(odb_err)?;
        writer.commit().map_err(self.repo_err("writing a pack"))?;
        drop(writer);
        // The new pack is found by the next lookup (libgit2 rescans objects/pack on a miss).
        tracing::debug!(elapsed = ?started.elapsed(), objects = blobs.len(), bytes = stream.len(), "pack written");
        Ok(())
    }

    /// Writes a tree holding `entries` (paths relative to it) and returns its id.
    pub(super) fn write_dir(&self, entries: &[(&str, Oid)]) -> Result<Oid, GitError> {
        let mut tb = self
            .repo
            .treebuilder(None)
            .map_err(self.repo_err("building a tree"))?;
        let mut subdirs: BTreeMap<&str, Vec<(&str, Oid)>> = BTreeMap::new();
        for &(path, oid) in entries {
            match path.split_once('/') {
                None => {
                    tb.insert(path, oid, MODE_FILE)
                        .map_err(self.repo_err(format!("adding {path} to a tree")))?;
                }
                Some((dir, rest)) => subdirs.entry(dir).or_default().push((rest, oid)),
            }
        }
        for (dir, sub) in subdirs {
            let id = self.write_dir(&sub)?;
            tb.insert(dir, id, MODE_TREE)
                .map_err(self.repo_err(format!("adding {dir} to a tree")))?;
        }
        tb.write().map_err(self.repo_err("writing a tree"))
    }

    /// `tree` with the entry at `comps` replaced by `sub` (removed for `None`); `None` when the
    /// result is empty. Only the trees along the path are rewritten.
    pub(super) fn splice(
        &self,
        tree: Option<&Tree<'_>>,
        comps: &[String],
        sub: Option<Oid>,
    ) -> Result<Option<Oid>, GitError> {
        let (first, rest) = comps.split_first().expect("path has a component");
        let mut tb = self
            .repo
            .treebuilder(tree)
            .map_err(self.repo_err("building a tree"))?;
        let new_child = if rest.is_empty() {
            sub
        } else {
            let child = tree
                .and_then(|t| t.get_name(first))
                .filter(|e| e.kind() == Some(ObjectType::Tree))
                .map(|e| self.repo.find_tree(e.id()))
                .transpose()
                .map_err(self.repo_err("reading a tree"))?;
            self.splice(child.as_ref(), rest, sub)?
        };
        match new_child {
            Some(id) => {
                tb.insert(first.as_str(), id, MODE_TREE)
                    .map_err(self.repo_err(format!("adding {first} to a tree")))?;
            }
            None => {
                if tb.get(first.as_str()).ok().flatten().is_some() {
                    tb.remove(first.as_str())
                        .map_err(self.repo_err(format!("removing {first}")))?;
                }
            }
        }
        if tb.is_empty() {
            return Ok(None);
        }
        tb.write()
            .map(Some)
            .map_err(self.repo_err("writing a tree"))
    }

    /// Moves the branch from `old` to `new` only if it is still at `old`.
    pub(super) fn move_branch(
        &self,
        old: Option<Oid>,
        new: Oid,
        msg: &str,
    ) -> Result<(), GitError> {
        let result = match old {
            Some(o) => self
                .repo
                .reference_matching(&self.refname, new, true, o, msg),
            None => self.repo.reference(&self.refname, new, false, msg),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Exists) => {
                // Another writer won the compare-and-swap: what was decided is older than the
                // branch now, whatever the other writer changed.
                let now = self.branch_head()?;
                Err(self.stale(old, now, "nothing was committed"))
            }
            Err(e) => Err(self.repo_err(format!("updating {}", self.refname))(e)),
        }
    }

    pub(super) fn stale(&self, seen: Option<Oid>, now: Option<Oid>, done: &str) -> GitError {
        let id = |o: Option<Oid>| o.map(short).unwrap_or_else(|| "none".to_string());
        GitError::Stale {
            branch: self.branch.clone(),
            path: self.dest.path.clone(),
            seen: id(seen),
            now: id(now),
            done: done.to_string(),
        }
    }

    /// Whether a decision made from the folder at `seen` still holds at `now`: the folder is
    /// the same there, or (when `seen` has commits `now` lacks) the folder at `now` is still
    /// the one at their fork point, so the other side never touched it. Either way the other
    /// writer changed only other paths and rebuilding this run's commit on `now` is safe.
    pub(super) fn decision_holds(
        &self,
        seen: Option<Oid>,
        now: Option<Oid>,
    ) -> Result<bool, GitError> {
        let at_now = self.folder_id(now)?;
        if self.folder_id(seen)? == at_now {
            return Ok(true);
        }
        let (Some(seen), Some(now)) = (seen, now) else {
            return Ok(false);
        };
        match self.repo.merge_base(seen, now) {
            Ok(base) if base != seen => Ok(self.folder_id(Some(base))? == at_now),
            _ => Ok(false),
        }
    }

    /// Commits and moves the branch (and working tree). Returns the plan and the new commit.
    pub(super) fn commit_onto(
        &self,
        req: &Request<'_>,
        comps: &[String],
        parent: Option<Oid>,
        worktree: bool,
    ) -> Result<(Plan, Option<Oid>), GitError> {
        let started = std::time::Instant::now();
        if req.fingerprint.is_some() && self.fingerprint_at(parent)?.as_deref() == req.fingerprint {
            // The head was committed from the same inputs and its folder is untouched since.
            tracing::debug!("fingerprint matches the branch head: nothing to compare or write");
            let plan = Plan {
                changes: Vec::new(),
                new: Vec::new(),
            };
            return Ok((plan, None));
        }
        let (plan, commit) = self.build(req, comps, parent)?;
        tracing::debug!(elapsed = ?started.elapsed(), changes = plan.changes.len(), "compared and built");
        let Some(c) = commit else {
            return Ok((plan, None));
        };
        let msg = format!("snaproll: {}", plan.summary(req));
        self.land(parent, c, &msg, req.files, worktree)?;
        tracing::info!(commit = %c, branch = %self.branch, "committed");
        Ok((plan, Some(c)))
    }

    /// Moves the branch from `from` to `to` (compare-and-swap) and, with a working tree, makes
    /// the working tree and index follow. Every file that changes is checked writable before
    /// the branch moves, so a refusal leaves branch, index and working tree as they were.
    /// `files`: the content this run wrote (written without reading it back); empty when the
    /// target is someone else's commit. The one way any commit, rebuild or reset lands.
    pub(super) fn land(
        &self,
        from: Option<Oid>,
        to: Oid,
        msg: &str,
        files: &[File],
        worktree: bool,
    ) -> Result<(), GitError> {
        let changes = if worktree {
            let changes = self.worktree_changes(from, to)?;
            self.check_writable(&changes)?;
            Some(changes)
        } else {
            None
        };
        self.move_branch(from, to, msg)?;
        if let Some(changes) = changes {
            self.update_worktree(files, to, &changes)?;
        }
        Ok(())
    }

    /// `seen`: the branch head a read of this run decided on (`None`: not read, use the head).
    pub(super) fn publish(
        &self,
        req: &Request<'_>,
        comps: &[String],
        seen: Option<Option<Oid>>,
    ) -> Result<Outcome, GitError> {
        let worktree = self.has_worktree();
        if worktree {
            self.check_clean(&self.dest.path, &BTreeSet::new())?;
        }
        let head = self.branch_head()?;
        let decided_from = seen.unwrap_or(head);
        let parent = if decided_from == head {
            head
        } else if self.decision_holds(decided_from, head)? {
            // Someone committed other paths since the read: build on their commit.
            tracing::info!(branch = %self.branch, "the branch moved since the read, outside the folder; committing onto the new head");
            head
        } else {
            return Err(self.stale(decided_from, head, "nothing was committed"));
        };
        let (mut plan, mut commit) = self.commit_onto(req, comps, parent, worktree)?;
        let mut outcome_attempts = 0;
        let mut pushed = false;
        if self.dest.push || self.url_mode {
            let nothing_to_push = self.url_mode && commit.is_none();
            if !nothing_to_push {
                let (p, c, attempts, did_push) =
                    self.push_with_retries(req, comps, worktree, decided_from, plan, commit)?;
                plan = p;
                commit = c;
                outcome_attempts = attempts;
                pushed = did_push;
            }
        }
        let head = self.branch_head()?;
        let mut out = plan.outcome(req, commit, head, self.branch.clone(), &self.dest.path);
        out.pushed = pushed;
        out.push_attempts = outcome_attempts;
        Ok(out)
    }

    /// Pushes; on a rejection caused by the remote moving, fetches, and when the remote's
    /// folder is still the one the decision was made from (`decided_from`: the other writer
    /// changed only other paths), rebuilds the commit on the new remote head and retries,
    /// sleeping `retry_delay · 2^n` (capped) between attempts. When the folder changed there,
    /// nothing is pushed: [`GitError::Stale`] (a local branch is moved to the remote head first,
    /// so that the next read sees what the other writer decided).
    pub(super) fn push_with_retries(
        &self,
        req: &Request<'_>,
        comps: &[String],
        worktree: bool,
        decided_from: Option<Oid>,
        mut plan: Plan,
        mut commit: Option<Oid>,
    ) -> Result<(Plan, Option<Oid>, u32, bool), GitError> {
        let url = self.remote_url()?;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let reason = match self.push_once()? {
                PushResult::Pushed => {
                    tracing::info!(remote = %url, branch = %self.branch, attempts, "pushed");
                    return Ok((plan, commit, attempts, true));
                }
                PushResult::Rejected(reason) => reason,
            };
            let local = self.branch_head()?;
            let kept = match (self.url_mode, &self.dest.workdir) {
                (false, _) => format!(
                    "the commit stays on the local branch ({}) and the next run pushes it",
                    local.map(short).unwrap_or_default()
                ),
                (true, None) => {
                    "nothing was pushed and the temporary clone is removed; the next run clones and commits again".to_string()
                }
                (true, Some(dir)) => format!(
                    "nothing was pushed; the next run resets the clone in {} to the remote and commits again",
                    dir.display()
                ),
            };
            let rejected = |attempts| GitError::PushRejected {
                url: url.clone(),
                branch: self.branch.clone(),
                attempts,
                reason: reason.clone(),
                kept: kept.clone(),
            };
            if attempts > self.dest.push_retries {
                return Err(rejected(attempts));
            }
            let delay = self
                .dest
                .retry_delay
                .saturating_mul(1 << (attempts - 1).min(16))
                .min(MAX_RETRY_DELAY);
            tracing::info!(remote = %url, %reason, attempt = attempts, ?delay, "push rejected; retrying");
            std::thread::sleep(delay);
            let remote_head = self.fetch()?;
            let Some(remote_head) = remote_head else {
                return Err(rejected(attempts));
            };
            let Some(local) = local else {
                return Err(rejected(attempts));
            };
            if local == remote_head
                || self
                    .repo
                    .graph_descendant_of(local, remote_head)
                    .unwrap_or(false)
            {
                // The remote did not move past us: retrying the same push cannot help.
                return Err(rejected(attempts));
            }
            self.check_only_ours(local, remote_head)?;
            let holds = self.decision_holds(decided_from, Some(remote_head))?;
            if worktree {
                // The rebuilt commit may bring the remote's changes outside the folder.
                let remote_tree = self.tree_of(Some(remote_head))?;
                let local_tree = self.tree_of(Some(local))?;
                let diff = self
                    .repo
                    .diff_tree_to_tree(local_tree.as_ref(), remote_tree.as_ref(), None)
                    .map_err(self.repo_err("comparing with the remote"))?;
                let paths: BTreeSet<String> = diff
                    .deltas()
                    .filter_map(|d| {
                        d.new_file()
                            .path()
                            .or(d.old_file().path())
                            .map(|p| p.to_string_lossy().to_string())
                    })
                    .collect();
                self.check_clean(&self.dest.path, &paths)?;
            }
            let (new_plan, new_commit) = if holds {
                self.build(req, comps, Some(remote_head))?
            } else {
                (plan, None)
            };
            let target = new_commit.unwrap_or(remote_head);
            let (msg, files) = if holds {
                ("snaproll: rebuilt on the remote head", req.files)
            } else {
                // After a reset the folder is the remote's, not this run's files.
                (
                    "snaproll: reset to the remote head (decision was stale)",
                    &[][..],
                )
            };
            self.land(Some(local), target, msg, files, worktree)?;
            if !holds {
                let done = if self.url_mode {
                    "nothing was pushed"
                } else {
                    "nothing was pushed and the local branch now follows the remote head (the older commit stays in the reflog)"
                };
                return Err(self.stale(decided_from, Some(remote_head), done));
            }
            plan = new_plan;
            commit = new_commit;
            if new_commit.is_none() {
                // The remote already has exactly this content: nothing left to push.
                return Ok((plan, None, attempts, false));
            }
        }
    }

    /// Refuses to rebuild when the local commits the remote lacks change anything outside the
    /// folder: those are someone's work that a rebuild would drop.
    pub(super) fn check_only_ours(&self, local: Oid, remote: Oid) -> Result<(), GitError> {
        let diverged = || GitError::Diverged {
            branch: self.branch.clone(),
            remote: self.dest.remote.clone(),
            path: self.dest.path.clone(),
        };
        let base = self
            .repo
            .merge_base(local, remote)
            .map_err(|_| diverged())?;
        let a = self.tree_of(Some(base))?.expect("commit has a tree");
        let b = self.tree_of(Some(local))?.expect("commit has a tree");
        let mut opts = git2::DiffOptions::new();
        let diff = self
            .repo
            .diff_tree_to_tree(Some(&a), Some(&b), Some(&mut opts))
            .map_err(self.repo_err("comparing local commits"))?;
        let prefix = format!("{}/", self.dest.path.trim_end_matches('/'));
        let outside = diff.deltas().any(|d| {
            let p = d
                .new_file()
                .path()
                .or(d.old_file().path())
                .map(|p| p.to_string_lossy().to_string())
                .unwrap_or_default();
            !p.starts_with(&prefix)
        });
        if outside {
            return Err(diverged());
        }
        Ok(())
    }
}
