//! Keeping a working tree and index in step with the branch, and refusing to overwrite edits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, StatusOptions, Tree};

use super::checkout::Session;
use super::*;

/// One file the working tree changes to follow a commit.
pub(super) struct WtChange {
    /// Path relative to the repository root.
    pub(super) rel: PathBuf,
    pub(super) deleted: bool,
    /// Mode and blob id in the new commit (unused for a deletion).
    pub(super) mode: i32,
    pub(super) id: Oid,
}

/// What a dirty folder is (see [`Session::unfinished`]).
pub(super) enum Unfinished {
    /// snaproll's own unfinished update: these changes complete it.
    Complete(Vec<WtChange>),
    /// It would be, but tracked files outside the folder changed too (listed).
    Blocked(Vec<String>),
    /// Someone's edits.
    No,
}

/// Up to three paths, then a count of the rest.
pub(super) fn list(paths: &[String]) -> String {
    let mut s = paths.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if paths.len() > 3 {
        s.push_str(&format!(" and {} more", paths.len() - 3));
    }
    s
}

impl Session {
    /// Whether HEAD is this branch in a repository with a working tree.
    pub(super) fn has_worktree(&self) -> bool {
        !self.url_mode
            && !self.repo.is_bare()
            && self
                .repo
                .find_reference("HEAD")
                .ok()
                .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string))
                .is_some_and(|t| t == self.refname)
    }

    /// Proves `folder` clean the way `git status` would find it, from file metadata alone:
    /// the index holds exactly HEAD's files of the folder (same ids and modes), the folder on
    /// disk holds exactly those files, and each one's `lstat` matches what the index recorded
    /// when it last saw the file, which was not in the index file's last moment (a "racy"
    /// entry, whose content might have changed within the same timestamp). `None` whenever
    /// anything is unusual or differs: then the full status decides (and names what differs).
    /// libgit2's status of 5,002 files was a third of a no-op run; this is the same reading
    /// without its per-entry allocations, ignore rules and pathspec matching.
    #[cfg(unix)]
    fn clean_by_stat(&self, folder: &str) -> Option<()> {
        use std::os::unix::fs::MetadataExt;
        let workdir = self.repo.workdir()?;
        let folder = folder.trim_end_matches('/');
        let head = self.tree_of(self.branch_head().ok()?).ok()??;
        let tree = self
            .repo
            .find_tree(head.get_path(Path::new(folder)).ok()?.id())
            .ok()?;
        let index = self.repo.index().ok()?;
        if index.has_conflicts() {
            return None;
        }
        let index_time = std::fs::metadata(self.repo.path().join("index")).ok()?;
        let (index_s, index_ns) = (index_time.mtime(), index_time.mtime_nsec());
        let prefix = format!("{folder}/");
        let mut at = index.find_prefix(Path::new(&prefix)).ok()?;
        let dir = workdir.join(folder);
        // Each file is looked up relative to the open folder: a full path per file walked
        // every directory above it again (most of the lookups' kernel time).
        let dir_fd = rustix::fs::open(
            &dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok()?;
        let mut names = BTreeSet::new();
        for entry in tree.iter() {
            let name = entry.name().ok()?;
            let ix = index.get(at)?;
            at += 1;
            // Flags beyond the name length and stage 0: assume-valid, extended (intent to add,
            // skip-worktree); any of them means the full status.
            if ix.path != format!("{prefix}{name}").as_bytes()
                || ix.id != entry.id()
                || ix.mode != entry.filemode() as u32
                || entry.kind() != Some(ObjectType::Blob)
                || ix.flags & !0x0fff != 0
                || ix.flags_extended != 0
            {
                return None;
            }
            let racy = (
                i64::from(ix.mtime.seconds()),
                i64::from(ix.mtime.nanoseconds()),
            ) >= (index_s, index_ns);
            let meta =
                rustix::fs::statat(&dir_fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()?;
            // The field types differ between platforms: widened to i64/u64 for the comparison.
            #[allow(clippy::unnecessary_cast)]
            let (mode, size, ino) = (meta.st_mode as u32, meta.st_size as u64, meta.st_ino as u64);
            #[allow(clippy::unnecessary_cast)]
            let (mtime, mtime_ns, ctime, ctime_ns) = (
                meta.st_mtime as i64,
                meta.st_mtime_nsec as i64,
                meta.st_ctime as i64,
                meta.st_ctime_nsec as i64,
            );
            let executable = mode & 0o111 != 0;
            if racy
                || rustix::fs::FileType::from_raw_mode(mode as _)
                    != rustix::fs::FileType::RegularFile
                || (ix.mode == 0o100755) != executable
                || u64::from(ix.file_size) != size & 0xffff_ffff
                || i64::from(ix.mtime.seconds()) != mtime
                || i64::from(ix.mtime.nanoseconds()) != mtime_ns
                || i64::from(ix.ctime.seconds()) != ctime
                || i64::from(ix.ctime.nanoseconds()) != ctime_ns
                || u64::from(ix.ino) != ino & 0xffff_ffff
            {
                return None;
            }
            names.insert(name.to_string());
        }
        // Nothing more of the folder in the index, and nothing else on disk (an untracked or
        // ignored file: the full status sorts out which).
        if index
            .get(at)
            .is_some_and(|ix| ix.path.starts_with(prefix.as_bytes()))
        {
            return None;
        }
        let mut on_disk = 0;
        for f in std::fs::read_dir(&dir).ok()? {
            let name = f.ok()?.file_name();
            if !names.contains(name.to_str()?) {
                return None;
            }
            on_disk += 1;
        }
        (on_disk == names.len()).then_some(())
    }

    #[cfg(not(unix))]
    fn clean_by_stat(&self, _folder: &str) -> Option<()> {
        None
    }

    /// Refuses when any of `also` (or anything under `folder`) is modified, staged or
    /// untracked in the working tree. Without `also` (the check before a run commits), a dirty
    /// folder that is exactly snaproll's own unfinished update is completed instead (see
    /// [`Session::unfinished`]).
    pub(super) fn check_clean(
        &self,
        folder: &str,
        also: &BTreeSet<String>,
    ) -> Result<(), GitError> {
        if also.is_empty() && self.clean_by_stat(folder).is_some() {
            tracing::debug!(folder, "working tree clean by its files' metadata");
            return Ok(());
        }
        let mut opts = StatusOptions::new();
        opts.include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false)
            .exclude_submodules(true);
        if also.is_empty() {
            opts.pathspec(folder);
        }
        let statuses = self
            .repo
            .statuses(Some(&mut opts))
            .map_err(self.repo_err("reading the working tree status"))?;
        let prefix = format!("{}/", folder.trim_end_matches('/'));
        let dirty: Vec<String> = statuses
            .iter()
            .filter(|s| !s.status().is_ignored())
            .filter_map(|s| s.path().ok().map(str::to_string))
            .filter(|p| p.starts_with(&prefix) || p == folder || also.contains(p))
            .collect();
        drop(statuses);
        if dirty.is_empty() {
            return Ok(());
        }
        let head = self.branch_head()?;
        let repo = &self.name;
        let stash = format!(
            "set them aside with `git -C {repo} stash push --include-untracked -- {folder}` (the folder returns to HEAD, the edits stay in the stash)"
        );
        let (state, remedy) = if !also.is_empty() {
            (
                "the remote's commit writes there too".to_string(),
                format!(
                    "set them aside with `git -C {repo} stash push --include-untracked` (the working tree returns to HEAD, the edits stay in the stash)"
                ),
            )
        } else if let Some(h) = head {
            match self.unfinished(h, folder, &dirty)? {
                Unfinished::Complete(changes) => {
                    self.check_writable(&changes)?;
                    self.update_worktree(&[], h, &changes)?;
                    tracing::info!(
                        path = folder,
                        head = %short(h),
                        files = changes.len(),
                        "completed an unfinished update: HEAD had moved but the index and working tree still held the previous commit's files"
                    );
                    return Ok(());
                }
                Unfinished::Blocked(outside) => (
                    format!(
                        "they hold the previous commit's content and HEAD ({}) is newer (a run stopped after committing), but files outside {folder} changed too ({}), so it was not completed automatically",
                        short(h),
                        list(&outside)
                    ),
                    format!(
                        "complete it with `git -C {repo} restore --source=HEAD --staged --worktree -- {folder}`"
                    ),
                ),
                Unfinished::No => (
                    format!(
                        "the working tree holds edits made after HEAD ({}), which holds the last commit",
                        short(h)
                    ),
                    stash,
                ),
            }
        } else {
            (
                "the branch has no commit yet".to_string(),
                format!("move them out of {folder}"),
            )
        };
        Err(GitError::Dirty {
            repo: self.name.clone(),
            path: folder.to_string(),
            files: list(&dirty),
            state,
            remedy,
        })
    }

    /// Whether the dirty paths under `folder` are exactly an update of snaproll's that stopped
    /// after the branch moved to `head` (a crash between the ref update and the index and
    /// working tree update): every dirty file's index and working-tree content is its content
    /// in `head` or in `head`'s first parent, so completing it (writing `head`'s version) loses
    /// nothing that is not committed. Tracked changes outside the folder block it: then the
    /// repository holds more than snaproll's unfinished update.
    pub(super) fn unfinished(
        &self,
        head: Oid,
        folder: &str,
        dirty: &[String],
    ) -> Result<Unfinished, GitError> {
        let commit = self
            .repo
            .find_commit(head)
            .map_err(self.repo_err(format!("reading commit {head}")))?;
        let head_tree = self.tree_of(Some(head))?.expect("commit has a tree");
        let parent_tree = self.tree_of(commit.parent_id(0).ok())?;
        let mut index = self
            .repo
            .index()
            .map_err(self.repo_err("reading the index"))?;
        index
            .read(false)
            .map_err(self.repo_err("reading the index"))?;
        if index.has_conflicts() {
            return Ok(Unfinished::No);
        }
        let root = self.repo.workdir().expect("non-bare").to_path_buf();
        let blob_at = |tree: Option<&Tree<'_>>, p: &str| -> Option<(Oid, i32)> {
            let e = tree?.get_path(Path::new(p)).ok()?;
            (e.kind() == Some(ObjectType::Blob)).then(|| (e.id(), e.filemode()))
        };
        let mut changes = Vec::new();
        for p in dirty {
            let new = blob_at(Some(&head_tree), p);
            let old = blob_at(parent_tree.as_ref(), p);
            let committed = |o: Option<Oid>| o == new.map(|n| n.0) || o == old.map(|n| n.0);
            let staged = index.get_path(Path::new(p), 0).map(|e| e.id);
            let full = root.join(p);
            let on_disk = match std::fs::symlink_metadata(&full) {
                Ok(m) if m.is_file() => Some(
                    Oid::hash_file(ObjectType::Blob, &full)
                        .map_err(self.repo_err(format!("reading {p}")))?,
                ),
                Ok(_) => return Ok(Unfinished::No),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(_) => return Ok(Unfinished::No),
            };
            if !committed(staged) || !committed(on_disk) {
                return Ok(Unfinished::No);
            }
            changes.push(WtChange {
                rel: PathBuf::from(p),
                deleted: new.is_none(),
                mode: new.map(|n| n.1).unwrap_or(MODE_FILE),
                id: new.map(|n| n.0).unwrap_or(Oid::ZERO_SHA1),
            });
        }
        let mut opts = StatusOptions::new();
        opts.include_untracked(false)
            .include_ignored(false)
            .exclude_submodules(true);
        let statuses = self
            .repo
            .statuses(Some(&mut opts))
            .map_err(self.repo_err("reading the working tree status"))?;
        let prefix = format!("{}/", folder.trim_end_matches('/'));
        let outside: Vec<String> = statuses
            .iter()
            .filter_map(|s| s.path().ok().map(str::to_string))
            .filter(|p| !p.starts_with(&prefix) && p != folder)
            .collect();
        if !outside.is_empty() {
            return Ok(Unfinished::Blocked(outside));
        }
        Ok(Unfinished::Complete(changes))
    }

    /// The files the working tree must change to go from commit `old` to `new`.
    pub(super) fn worktree_changes(
        &self,
        old: Option<Oid>,
        new: Oid,
    ) -> Result<Vec<WtChange>, GitError> {
        let old_tree = self.tree_of(old)?;
        let new_tree = self.tree_of(Some(new))?;
        let diff = self
            .repo
            .diff_tree_to_tree(old_tree.as_ref(), new_tree.as_ref(), None)
            .map_err(self.repo_err("comparing the old and new trees"))?;
        Ok(diff
            .deltas()
            .filter_map(|d| {
                let rel = d.new_file().path().or(d.old_file().path())?.to_path_buf();
                Some(WtChange {
                    rel,
                    deleted: d.status() == git2::Delta::Deleted,
                    mode: i32::from(d.new_file().mode()),
                    id: d.new_file().id(),
                })
            })
            .collect())
    }

    /// Checks, before the branch moves, that every file of `changes` can be written or removed:
    /// no file (an ignored one, say) where a folder must be, no folder where a file must be, and
    /// each folder that gets written to accepts a new file (probed by creating and removing a
    /// temporary file, which also catches read-only mounts and holds for root). A failure here
    /// leaves branch, index and working tree untouched.
    pub(super) fn check_writable(&self, changes: &[WtChange]) -> Result<(), GitError> {
        let root = self.repo.workdir().expect("non-bare").to_path_buf();
        let unwritable = |rel: &Path, source: std::io::Error| GitError::Unwritable {
            repo: self.name.clone(),
            path: rel.display().to_string(),
            source,
        };
        let removed: BTreeSet<&Path> = changes
            .iter()
            .filter(|c| c.deleted)
            .map(|c| c.rel.as_path())
            .collect();
        let mut probe: BTreeMap<PathBuf, &Path> = BTreeMap::new();
        for c in changes {
            if c.mode == i32::from(git2::FileMode::Commit) && !c.deleted {
                continue;
            }
            // The deepest folder that exists on the way to the file: it receives the change.
            let mut deepest = root.clone();
            let parent = c.rel.parent().unwrap_or(Path::new(""));
            let mut prefix = PathBuf::new();
            for comp in parent.components() {
                prefix.push(comp);
                match std::fs::symlink_metadata(root.join(&prefix)) {
                    Ok(m) if m.is_dir() => deepest = root.join(&prefix),
                    Ok(_) if removed.contains(prefix.as_path()) => break,
                    Ok(_) => {
                        return Err(unwritable(
                            &c.rel,
                            std::io::Error::other(format!(
                                "{} is a file, not a folder (an ignored file?); move it away",
                                prefix.display()
                            )),
                        ));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) => return Err(unwritable(&c.rel, e)),
                }
            }
            if !c.deleted && std::fs::symlink_metadata(root.join(&c.rel)).is_ok_and(|m| m.is_dir())
            {
                return Err(unwritable(
                    &c.rel,
                    std::io::Error::other("a folder is in the way; move it away"),
                ));
            }
            probe.entry(deepest).or_insert(&c.rel);
        }
        for (dir, rel) in probe {
            tempfile::Builder::new()
                .prefix(".snaproll-probe-")
                .tempfile_in(&dir)
                .map_err(|e| unwritable(rel, e))?;
        }
        Ok(())
    }

    /// Makes the working tree and index follow `changes` (checked clean and writable before):
    /// writes and removes exactly those files. Content comes from `files` where it has the file
    /// (no read-back from the object database), and index entries are built from the stat of
    /// the file just written with the blob id already known (no re-hashing).
    ///
    /// If writing a file fails anyway (disk full, a race), the index still gets every change
    /// (unwritten files with empty stat data, so git re-reads them): index and HEAD agree, the
    /// files show as unstaged changes, and the error names the command that restores them.
    pub(super) fn update_worktree(
        &self,
        files: &[File],
        new: Oid,
        changes: &[WtChange],
    ) -> Result<(), GitError> {
        let started = std::time::Instant::now();
        let all_ours = changes.iter().all(|c| c.rel.starts_with(&self.dest.path));
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| GitError::Worktree {
            branch: self.branch.clone(),
            commit: short(new),
            pathspec: if all_ours {
                self.dest.path.clone()
            } else {
                ".".to_string()
            },
            source,
        };
        let g = |e: git2::Error| fail(Box::new(self.scrub.err(e)));
        let ours: std::collections::HashMap<String, &[u8]> = files
            .iter()
            .map(|f| {
                (
                    format!("{}/{}", self.dest.path, f.path),
                    f.content.as_slice(),
                )
            })
            .collect();
        let root = self.repo.workdir().expect("non-bare").to_path_buf();
        let mut index = self.repo.index().map_err(g)?;
        let mut made_dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let mut first_error: Option<GitError> = None;
        let mut newest = None;
        for c in changes {
            let rel = c.rel.as_path();
            let full = root.join(rel);
            if c.deleted {
                let removed = match std::fs::remove_file(&full) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                };
                index.remove_path(rel).map_err(g)?;
                if let Err(e) = removed {
                    first_error.get_or_insert(fail(Box::new(e)));
                    continue;
                }
                // Drop folders the removal emptied (never the root).
                let mut dir = full.parent();
                while let Some(d) = dir {
                    if d == root || std::fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
                continue;
            }
            if c.mode == i32::from(git2::FileMode::Commit) {
                continue; // submodules are not ours to check out
            }
            let rel_str = rel.to_string_lossy();
            let written =
                (|| -> Result<std::fs::Metadata, Box<dyn std::error::Error + Send + Sync>> {
                    if let Some(parent) = full.parent()
                        && !made_dirs.contains(parent)
                    {
                        std::fs::create_dir_all(parent)?;
                        made_dirs.insert(parent.to_path_buf());
                    }
                    let blob;
                    let content: &[u8] = match ours.get(rel_str.as_ref()) {
                        Some(c) => c,
                        None => {
                            blob = self
                                .repo
                                .find_blob(c.id)
                                .map_err(|e| Box::new(self.scrub.err(e)))?;
                            blob.content()
                        }
                    };
                    if c.mode == i32::from(git2::FileMode::Link) {
                        let _ = std::fs::remove_file(&full);
                        let target = String::from_utf8_lossy(content).to_string();
                        std::os::unix::fs::symlink(target, &full)?;
                    } else {
                        std::fs::write(&full, content)?;
                        if c.mode == i32::from(git2::FileMode::BlobExecutable) {
                            use std::os::unix::fs::PermissionsExt;
                            std::fs::set_permissions(
                                &full,
                                std::fs::Permissions::from_mode(0o755),
                            )?;
                        }
                    }
                    Ok(std::fs::symlink_metadata(&full)?)
                })();
            let entry = match written {
                Ok(meta) => {
                    newest = newest.max(Some(mtime(&meta)));
                    index_entry(Some(&meta), c.id, c.mode, rel_str.as_bytes())
                }
                Err(e) => {
                    first_error.get_or_insert(fail(e));
                    index_entry(None, c.id, c.mode, rel_str.as_bytes())
                }
            };
            index.add(&entry).map_err(g)?;
        }
        index.write().map_err(g)?;
        if let Some(newest) = newest {
            self.index_after(&mut index, newest);
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        tracing::debug!(elapsed = ?started.elapsed(), files = changes.len(), "working tree updated");
        Ok(())
    }
}

/// A file's modification time, to the nanosecond the filesystem keeps.
fn mtime(meta: &std::fs::Metadata) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (meta.mtime(), meta.mtime_nsec())
}

impl Session {
    /// Writes the index again until its own modification time is later than `newest`, the
    /// newest file just written. Files and index written within one tick of the filesystem's
    /// clock (about a millisecond or more on most) leave every entry "racy": git and libgit2
    /// then cannot trust the recorded stat data and re-read each file on every status, and
    /// a no-op run cannot prove its folder clean from metadata. Gives up after 50 tries
    /// (coarser clocks), and at the first failed write (say, another git holds the index
    /// lock): the index already written is right, its entries stay racy, which is only slower.
    fn index_after(&self, index: &mut git2::Index, newest: (i64, i64)) {
        let path = self.repo.path().join("index");
        for _ in 0..50 {
            match std::fs::metadata(&path) {
                Ok(m) if mtime(&m) <= newest => {}
                _ => return,
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            if let Err(e) = index.write() {
                tracing::debug!(error = %self.scrub.err(e), "index left racy");
                return;
            }
        }
    }
}

/// An index entry for a file just written: its stat data and the blob id already known. Without
/// stat data (the file could not be written) every field is zero, so git re-reads the file.
pub(super) fn index_entry(
    meta: Option<&std::fs::Metadata>,
    id: Oid,
    mode: i32,
    path: &[u8],
) -> git2::IndexEntry {
    use std::os::unix::fs::MetadataExt;
    let stat = |f: fn(&std::fs::Metadata) -> i64| meta.map(f).unwrap_or(0);
    // The index stores these as 32-bit fields; truncation is what git does too.
    git2::IndexEntry {
        ctime: git2::IndexTime::new(stat(|m| m.ctime()) as i32, stat(|m| m.ctime_nsec()) as u32),
        mtime: git2::IndexTime::new(stat(|m| m.mtime()) as i32, stat(|m| m.mtime_nsec()) as u32),
        dev: stat(|m| m.dev() as i64) as u32,
        ino: stat(|m| m.ino() as i64) as u32,
        mode: mode as u32,
        uid: stat(|m| i64::from(m.uid())) as u32,
        gid: stat(|m| i64::from(m.gid())) as u32,
        file_size: stat(|m| m.size() as i64) as u32,
        id,
        flags: (path.len().min(0xfff)) as u16,
        flags_extended: 0,
        path: path.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::checkout::Session;

    /// A commit request for `files` of rollout `demo`, generation `g1`, by `t`.
    fn request(files: &[File]) -> Request<'_> {
        Request {
            files,
            rollout: "demo",
            generation: "g1",
            author_name: Some("t"),
            author_email: Some("t@example.com"),
            describe_removed: None,
            fingerprint: None,
            fingerprint_check: None,
            scope: None,
        }
    }

    /// The path taken only when a write fails after the checks passed: the commit stays, the
    /// index matches it (nothing left staged against HEAD) and the error names a working command.
    #[test]
    fn failed_worktree_write_after_the_move_leaves_the_index_matching_head() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        let dest = Destination::new(root.to_str().unwrap(), "rollouts/demo");
        let files = vec![File {
            path: "a.yaml".into(),
            content: b"a: 1\n".to_vec(),
            objects: vec![],
        }];
        let req = request(&files);
        let session = Session::open(&dest, true).unwrap();
        let comps = vec!["rollouts".to_string(), "demo".to_string()];
        let (_, commit) = session.commit_onto(&req, &comps, None, false).unwrap();
        let commit = commit.unwrap();
        // Something appears where the folder goes after the checks would have passed.
        std::fs::create_dir_all(root.join("rollouts")).unwrap();
        std::fs::write(root.join("rollouts/demo"), "x").unwrap();
        let changes = session.worktree_changes(None, commit).unwrap();
        let err = session
            .update_worktree(req.files, commit, &changes)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "committed {} to main, but writing the working tree failed; the index matches the commit, restore the files with `git restore --source=HEAD --staged --worktree -- rollouts/demo`",
                short(commit)
            )
        );
        let mut index = session.repo.index().unwrap();
        index.read(true).unwrap();
        let tree = session.repo.find_commit(commit).unwrap().tree_id();
        assert_eq!(index.write_tree().unwrap(), tree);
    }

    /// A published folder is proven clean from metadata alone (the index written after its
    /// files, so no entry is racy); anything that changes what `git status` would see of the
    /// folder (a touch, an edit, a file more or less, a staged change) leaves the proof to the
    /// full status.
    #[test]
    fn a_clean_folder_is_proven_from_metadata_and_any_change_defers_to_the_status() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        let dest = Destination::new(root.to_str().unwrap(), "rollouts/demo");
        let files: Vec<File> = ["a.yaml", "b.yaml"]
            .iter()
            .map(|p| File {
                path: p.to_string(),
                content: format!("{p}: 1\n").into_bytes(),
                objects: vec![],
            })
            .collect();
        let req = request(&files);
        crate::gitops::publish(&dest, &req).unwrap();
        // A fresh session for each check, as each run opens one (libgit2 keeps what a status
        // learnt of the index for the rest of a session).
        let session = || Session::open(&dest, false).unwrap();
        let folder = root.join("rollouts/demo");
        let index_time = std::fs::metadata(root.join(".git/index")).unwrap();
        for f in ["a.yaml", "b.yaml"] {
            let m = std::fs::metadata(folder.join(f)).unwrap();
            assert!(
                (m.mtime(), m.mtime_nsec()) < (index_time.mtime(), index_time.mtime_nsec()),
                "{f} is racy"
            );
        }
        assert!(session().clean_by_stat("rollouts/demo").is_some());
        session()
            .check_clean("rollouts/demo", &BTreeSet::new())
            .unwrap();

        let a = folder.join("a.yaml");
        let original = std::fs::read(&a).unwrap();
        let unproven = || session().clean_by_stat("rollouts/demo").is_none();
        let status = || session().check_clean("rollouts/demo", &BTreeSet::new());
        // The same bytes written again: new stat data, so the status decides (and finds it clean).
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&a, &original).unwrap();
        assert!(unproven());
        status().unwrap();
        // An edit of the same size (in a later tick of the file clock: within one, only the
        // racy-entry rule of a fresh index write can tell), an extra file, a missing file.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&a, b"a.yaml: 2\n").unwrap();
        assert!(unproven());
        assert!(status().is_err());
        std::fs::write(&a, &original).unwrap();
        std::fs::write(folder.join("c.yaml"), "c").unwrap();
        assert!(unproven());
        std::fs::remove_file(folder.join("c.yaml")).unwrap();
        std::fs::remove_file(folder.join("b.yaml")).unwrap();
        assert!(unproven());
        // The folder before the only commit had no b.yaml: the status takes it for a run that
        // stopped before its working tree was written, and completes it.
        status().unwrap();
        assert_eq!(
            std::fs::read(folder.join("b.yaml")).unwrap(),
            b"b.yaml: 1\n"
        );
    }
}
