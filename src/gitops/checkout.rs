//! Opening a repository or cloning a URL, the branch to write, and reading what it holds.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use git2::{
    ErrorCode, ObjectType, Oid, Repository, RepositoryInitOptions, Tree, TreeWalkMode,
    TreeWalkResult,
};

use super::paths::{check_files, rel_key};
use super::plan::Plan;
use super::redact::Scrubber;
use super::*;

/// The repository of one run, opened once: an offline run reads what the branch holds, decides,
/// and publishes onto that same snapshot (a URL is cloned once, and the commit is built on the
/// remote head that was read). `--path` and `--branch` are checked before anything is opened.
pub struct Checkout {
    dest: Destination,
    /// `dest.path`'s components.
    rel: Vec<String>,
    /// `None` while the local repository does not exist yet (a missing path or an empty
    /// directory): it is created by [`Checkout::publish`], never by a read or a preview.
    session: Option<Session>,
    /// The branch head [`Checkout::read`] saw; [`Checkout::publish`] commits onto exactly it
    /// (compare-and-swap), so a branch that moved in between fails the run instead of being
    /// overwritten by a decision made on older content.
    seen: Cell<Option<Option<Oid>>>,
}

impl Checkout {
    /// Checks `--path` and `--branch` (exit 2 before anything is touched), then opens the
    /// repository or clones the URL.
    pub fn open(dest: &Destination) -> Result<Checkout, GitError> {
        let rel = check_destination(dest)?;
        let dest = Destination {
            path: rel.join("/"),
            ..dest.clone()
        };
        let path = Path::new(&dest.repo);
        let not_yet = !is_url(&dest.repo)
            && (!path.exists()
                || (path.is_dir()
                    && std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())));
        let session = if not_yet {
            None
        } else {
            Some(Session::open(&dest, false)?)
        };
        Ok(Checkout {
            dest,
            rel,
            session,
            seen: Cell::new(None),
        })
    }

    /// The files the branch holds under the folder (path relative to the folder), writing
    /// nothing; empty when the repository, branch or folder does not exist yet. Offline runs
    /// read what was committed before to decide which generations Git keeps.
    pub fn read(&self) -> Result<Vec<File>, GitError> {
        let Some(session) = &self.session else {
            return Ok(Vec::new());
        };
        let head = session.branch_head()?;
        self.seen.set(Some(head));
        let tree = session.tree_of(head)?;
        let mut files = Vec::new();
        for (path, (oid, _)) in session.read_folder(tree.as_ref(), &self.rel)? {
            files.push(File {
                content: session.blob_content(oid)?,
                path,
                objects: Vec::new(),
            });
        }
        Ok(files)
    }

    /// The fingerprint the branch head was committed with ([`Request::fingerprint`]), only when
    /// the head commit carries one and its folder is still exactly the tree that commit
    /// recorded with it (an amended or hand-made commit does not count). Reads one commit and
    /// one tree entry: a caller whose fingerprint equals this one has nothing to do.
    pub fn head_fingerprint(&self) -> Result<Option<String>, GitError> {
        let Some(session) = &self.session else {
            return Ok(None);
        };
        session.fingerprint_at(session.branch_head()?)
    }

    /// The branch head, when it was committed with a fingerprint still bound to its folder
    /// (see [`Checkout::head_fingerprint`]: a fixed point of some inputs); it becomes the head
    /// this run read, so [`Checkout::publish`] commits onto exactly it. `None` (nothing
    /// recorded as read) when the head carries no fingerprint or there is no repository yet.
    pub fn vouched_head(&self) -> Result<Option<Oid>, GitError> {
        let Some(session) = &self.session else {
            return Ok(None);
        };
        let head = session.branch_head()?;
        if head.is_none() || session.fingerprint_at(head)?.is_none() {
            return Ok(None);
        }
        self.seen.set(Some(head));
        Ok(head)
    }

    /// The named files of the folder (relative paths) as the head [`Checkout::vouched_head`]
    /// returned holds them, in the order asked; `None` for a name it does not hold as a file.
    /// Reads only those blobs, not the folder.
    pub fn read_named(&self, names: &[&str]) -> Result<Vec<Option<Vec<u8>>>, GitError> {
        let (Some(session), Some(head)) = (&self.session, self.seen.get().flatten()) else {
            return Ok(names.iter().map(|_| None).collect());
        };
        let Some(tree) = session.tree_of(Some(head))? else {
            return Ok(names.iter().map(|_| None).collect());
        };
        let folder = self.rel.join("/");
        names
            .iter()
            .map(
                |name| match tree.get_path(Path::new(&format!("{folder}/{name}"))) {
                    Ok(e) if e.kind() == Some(ObjectType::Blob) => {
                        session.blob_content(e.id()).map(Some)
                    }
                    Ok(_) => Ok(None),
                    Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
                    Err(e) => Err(session.repo_err(format!("reading {name}"))(e)),
                },
            )
            .collect()
    }

    /// A place beside this repository for bytes a caller keeps between runs under `key`
    /// (`<git dir>/snaproll/<key>`): never committed, pushed or cloned, so only a later run
    /// on the same repository sees it. `None` for a temporary clone (a URL).
    pub fn keeper(&self, key: &str) -> Option<Keeper> {
        if key.is_empty() || key.contains(['/', '\\', '.']) {
            return None;
        }
        let dir = match &self.session {
            Some(s) if s.url_mode => return None,
            Some(s) => s.repo.path().to_path_buf(),
            // `publish` creates it as a non-bare repository (see `init_repo`).
            None if is_url(&self.dest.repo) => return None,
            None => Path::new(&self.dest.repo).join(".git"),
        };
        Some(Keeper {
            path: dir.join("snaproll").join(key),
        })
    }

    /// The outcome of a publish that writes nothing, when the branch head was committed with
    /// `fingerprint` and its folder is still what that commit recorded (see
    /// [`Checkout::head_fingerprint`]); `None` otherwise, and then the caller does the full
    /// run. Reads one commit and one tree entry. A working tree is checked first as a publish
    /// checks it (a crashed run's checkout is completed, someone's edits are refused), and a
    /// local repository that pushes never skips (an earlier run's commit may be unpushed).
    pub fn unchanged(&self, fingerprint: &str) -> Result<Option<Outcome>, GitError> {
        let Some(session) = &self.session else {
            return Ok(None);
        };
        if self.dest.push && !session.url_mode {
            return Ok(None);
        }
        let head = session.branch_head()?;
        if self.seen.get().is_some_and(|seen| seen != head)
            || session.fingerprint_at(head)?.as_deref() != Some(fingerprint)
        {
            return Ok(None);
        }
        if session.has_worktree() {
            session.check_clean(&self.dest.path, &BTreeSet::new())?;
        }
        tracing::debug!(head = ?head.map(short), "fingerprint matches the branch head: nothing to read, decide or write");
        Ok(Some(Outcome {
            commit: None,
            head,
            branch: session.branch.clone(),
            path: self.dest.path.clone(),
            summary: format!(
                "snaproll: nothing to do: {} was committed from the same inputs",
                head.map(short).unwrap_or_default()
            ),
            changes: Vec::new(),
            pushed: false,
            push_attempts: 0,
        }))
    }

    /// Commits the folder content of `req` (and pushes when asked or for a URL); creates a
    /// missing local repository first.
    pub fn publish(self, req: &Request<'_>) -> Result<Outcome, GitError> {
        check_files(req)?;
        let session = match self.session {
            Some(s) => s,
            None => Session::open(&self.dest, true)?,
        };
        session.publish(req, &self.rel, self.seen.get())
    }

    /// What [`Checkout::publish`] would commit, with old and new contents, writing nothing.
    pub fn preview(&self, req: &Request<'_>) -> Result<Outcome, GitError> {
        check_files(req)?;
        let dest = &self.dest;
        let Some(session) = &self.session else {
            // Nothing to open: everything would be added.
            let branch = dest.branch.clone().unwrap_or(DEFAULT_BRANCH.to_string());
            let plan = Plan::new(&dest.path, req, &BTreeMap::new(), true);
            return Ok(plan.outcome(req, None, None, branch, &dest.path));
        };
        let branch = session.branch.clone();
        let parent = match self.seen.get() {
            Some(seen) => seen,
            None => session.branch_head()?,
        };
        let parent_tree = session.tree_of(parent)?;
        let old = session.read_folder(parent_tree.as_ref(), &self.rel)?;
        let mut plan = Plan::new(&dest.path, req, &old, true);
        for c in &mut plan.changes {
            if c.kind != ChangeKind::Added {
                let (oid, _) = old[rel_key(&dest.path, &c.path)];
                c.old = Some(session.blob_content(oid)?);
            }
        }
        if let Some(describe) = req.describe_removed {
            for c in plan
                .changes
                .iter_mut()
                .filter(|c| c.kind == ChangeKind::Removed)
            {
                c.objects = describe(&c.path, c.old.as_deref().unwrap_or_default());
            }
        }
        Ok(plan.outcome(req, None, parent, branch, &dest.path))
    }
}

/// Bytes kept beside a repository between runs (see [`Checkout::keeper`]). Best effort: a
/// read that fails is `None`, a write that fails is only logged, so what is kept can only
/// speed a run up, never fail one.
#[derive(Clone, Debug)]
pub struct Keeper {
    path: std::path::PathBuf,
}

impl Keeper {
    /// What was kept, if anything.
    pub fn read(&self) -> Option<Vec<u8>> {
        std::fs::read(&self.path).ok()
    }

    /// Replaces what is kept: written to a temporary file and renamed, so a reader sees the
    /// old bytes or the new ones, never a part.
    pub fn write(&self, bytes: &[u8]) {
        let result = (|| {
            let dir = self.path.parent().expect("a key under a directory");
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, bytes)?;
            tmp.persist(&self.path).map_err(|e| e.error)?;
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = result {
            tracing::debug!(error = %e, path = %self.path.display(), "could not keep a file beside the repository");
        }
    }

    /// Forgets what was kept (a run that cannot vouch for it).
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An open repository and the branch being written.
pub(super) struct Session {
    pub(super) dest: Destination,
    pub(super) repo: Repository,
    /// Display name of the repository (redacted URL or the path).
    pub(super) name: String,
    pub(super) branch: String,
    pub(super) refname: String,
    pub(super) url_mode: bool,
    pub(super) scrub: Scrubber,
    /// The clone's temporary directory, removed on drop.
    pub(super) _tmp: Option<tempfile::TempDir>,
}

impl Session {
    /// Opens (or, when `create`, creates) the repository and resolves the branch.
    pub(super) fn open(dest: &Destination, create: bool) -> Result<Session, GitError> {
        // Inserting a tree entry or a commit parent otherwise looks every id up in the object
        // database (a rescan of objects/pack on each miss); snaproll only refers to objects it
        // has just written or read from existing trees, so the check buys nothing here.
        static LIBGIT2_OPTS: std::sync::Once = std::sync::Once::new();
        LIBGIT2_OPTS.call_once(|| git2::opts::strict_object_creation(false));
        let scrub = Scrubber::new(dest);
        if is_url(&dest.repo) {
            return Session::clone_url(dest, scrub);
        }
        let path = Path::new(&dest.repo);
        let name = dest.repo.clone();
        let repo = if path.exists() {
            match Repository::open(path) {
                Ok(r) => r,
                Err(e) if e.code() == ErrorCode::NotFound => {
                    let empty_dir = path.is_dir()
                        && std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
                    if !empty_dir || !create {
                        return Err(GitError::NotARepo { repo: name });
                    }
                    init_repo(path, dest, &name)?
                }
                Err(e) => {
                    return Err(GitError::Open {
                        repo: name,
                        source: scrub.err(e),
                    });
                }
            }
        } else {
            init_repo(path, dest, &name)?
        };
        let branch = resolve_branch(&repo, dest, &name, &scrub)?;
        Ok(Session {
            dest: dest.clone(),
            repo,
            name,
            refname: format!("refs/heads/{branch}"),
            branch,
            url_mode: false,
            scrub,
            _tmp: None,
        })
    }

    /// A bare clone of a URL in the work directory: fetch the branch, point the local branch
    /// at the remote head (the clone is scratch space: the remote is the truth).
    pub(super) fn clone_url(dest: &Destination, scrub: Scrubber) -> Result<Session, GitError> {
        let url_name = redact_url(&dest.repo);
        let (tmp, dir) = match &dest.workdir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|source| GitError::Workdir { source })?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("snaproll-clone-")
                    .tempdir()
                    .map_err(|source| GitError::Workdir { source })?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let workdir_name = dir.display().to_string();
        let repo = match Repository::open_bare(&dir) {
            Ok(r) => {
                tracing::debug!(dir = %workdir_name, "fetching into the existing clone");
                r
            }
            Err(_) if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none()) => {
                tracing::debug!(dir = %workdir_name, "new clone");
                Repository::init_bare(&dir).map_err(|e| GitError::Create {
                    repo: workdir_name.clone(),
                    source: Box::new(scrub.err(e)),
                })?
            }
            Err(_) => return Err(GitError::NotARepo { repo: workdir_name }),
        };
        let scrub_c = scrub.clone();
        let repo_err = move |action: String| {
            let scrub = scrub_c.clone();
            move |e: git2::Error| GitError::Repo {
                action,
                source: scrub.err(e),
            }
        };
        // The clone's config (kept in --workdir) gets the URL without its secret; the
        // credentials callback supplies it.
        let stored = redact_url(&dest.repo);
        match repo.find_remote(&dest.remote) {
            Ok(r) if r.url() == Ok(stored.as_str()) => {}
            Ok(_) => repo
                .remote_set_url(&dest.remote, &stored)
                .map_err(repo_err(format!("setting remote {}", dest.remote)))?,
            Err(_) => {
                repo.remote(&dest.remote, &stored)
                    .map_err(repo_err(format!("adding remote {}", dest.remote)))?;
            }
        }
        let mut session = Session {
            dest: dest.clone(),
            repo,
            name: url_name,
            branch: String::new(),
            refname: String::new(),
            url_mode: true,
            scrub,
            _tmp: tmp,
        };
        let (default, heads) = session.list_remote()?;
        let branch = match &dest.branch {
            Some(b) => {
                if !heads.is_empty() && !heads.contains(b) {
                    return Err(GitError::MissingBranch {
                        branch: b.clone(),
                        repo: session.name.clone(),
                        available: heads.iter().cloned().collect::<Vec<_>>().join(", "),
                    });
                }
                b.clone()
            }
            None => default.unwrap_or_else(|| DEFAULT_BRANCH.to_string()),
        };
        session.refname = format!("refs/heads/{branch}");
        session.branch = branch;
        let remote_head = if heads.contains(&session.branch) {
            session.fetch()?
        } else {
            None
        };
        let refname = session.refname.clone();
        let r = &session.repo;
        match remote_head {
            Some(oid) => {
                r.reference(&refname, oid, true, "snaproll: reset to remote")
                    .map_err(repo_err(format!("setting {refname}")))?;
            }
            None => {
                if let Ok(mut existing) = r.find_reference(&refname) {
                    existing
                        .delete()
                        .map_err(repo_err(format!("resetting {refname}")))?;
                }
            }
        }
        r.set_head(&refname)
            .map_err(repo_err("setting HEAD".to_string()))?;
        Ok(session)
    }

    pub(super) fn repo_err(
        &self,
        action: impl Into<String>,
    ) -> impl FnOnce(git2::Error) -> GitError + '_ {
        let action = action.into();
        move |e| GitError::Repo {
            action,
            source: self.scrub.err(e),
        }
    }

    pub(super) fn branch_head(&self) -> Result<Option<Oid>, GitError> {
        match self.repo.refname_to_id(&self.refname) {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.repo_err(format!("reading {}", self.refname))(e)),
        }
    }

    pub(super) fn tree_of(&self, commit: Option<Oid>) -> Result<Option<Tree<'_>>, GitError> {
        let Some(c) = commit else { return Ok(None) };
        let commit = self
            .repo
            .find_commit(c)
            .map_err(self.repo_err(format!("reading commit {c}")))?;
        commit
            .tree()
            .map(Some)
            .map_err(self.repo_err(format!("reading the tree of {c}")))
    }

    pub(super) fn blob_content(&self, oid: Oid) -> Result<Vec<u8>, GitError> {
        self.repo
            .find_blob(oid)
            .map(|b| b.content().to_vec())
            .map_err(self.repo_err(format!("reading blob {oid}")))
    }

    /// The files under the folder in `root`: path relative to the folder → (blob id, mode).
    /// A blob where the folder should be is listed under the empty path.
    pub(super) fn read_folder(
        &self,
        root: Option<&Tree<'_>>,
        comps: &[String],
    ) -> Result<BTreeMap<String, (Oid, i32)>, GitError> {
        let mut out = BTreeMap::new();
        let Some(root) = root else { return Ok(out) };
        let entry = match root.get_path(Path::new(&comps.join("/"))) {
            Ok(e) => e,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(out),
            Err(e) => return Err(self.repo_err("reading the folder")(e)),
        };
        if entry.kind() != Some(ObjectType::Tree) {
            out.insert(String::new(), (entry.id(), entry.filemode()));
            return Ok(out);
        }
        let tree = self
            .repo
            .find_tree(entry.id())
            .map_err(self.repo_err("reading the folder"))?;
        tree.walk(TreeWalkMode::PreOrder, |dir, e| {
            if e.kind() != Some(ObjectType::Tree) {
                let name = String::from_utf8_lossy(e.name_bytes());
                out.insert(format!("{dir}{name}"), (e.id(), e.filemode()));
            }
            TreeWalkResult::Ok
        })
        .map_err(self.repo_err("reading the folder"))?;
        Ok(out)
    }

    /// The id of what `commit` holds at the folder (a tree, or a blob in the way), `None` when
    /// the folder or the commit is absent. Two commits with the same id hold the same folder.
    pub(super) fn folder_id(&self, commit: Option<Oid>) -> Result<Option<Oid>, GitError> {
        let Some(tree) = self.tree_of(commit)? else {
            return Ok(None);
        };
        match tree.get_path(Path::new(&self.dest.path)) {
            Ok(e) => Ok(Some(e.id())),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.repo_err("reading the folder")(e)),
        }
    }

    /// The fingerprint trailer of `commit` when its folder is the tree recorded with it.
    pub(super) fn fingerprint_at(&self, commit: Option<Oid>) -> Result<Option<String>, GitError> {
        let Some(c) = commit else { return Ok(None) };
        let commit = self
            .repo
            .find_commit(c)
            .map_err(self.repo_err(format!("reading commit {c}")))?;
        let message = String::from_utf8_lossy(commit.message_bytes());
        let trailer = |key: &str| {
            message.lines().rev().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|r| r.strip_prefix(": "))
                    .map(str::to_string)
            })
        };
        let (Some(fp), Some(folder)) = (trailer(FINGERPRINT_TRAILER), trailer(FOLDER_TRAILER))
        else {
            return Ok(None);
        };
        let actual = self
            .folder_id(Some(c))?
            .map(|o| o.to_string())
            .unwrap_or("none".to_string());
        Ok((actual == folder).then_some(fp))
    }
}

/// Creates a non-bare repository whose HEAD is the branch to write (unborn until the commit).
pub(super) fn init_repo(
    path: &Path,
    dest: &Destination,
    name: &str,
) -> Result<Repository, GitError> {
    let create = |source: Box<dyn std::error::Error + Send + Sync>| GitError::Create {
        repo: name.to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(|e| create(Box::new(e)))?;
    let head = dest.branch.as_deref().unwrap_or(DEFAULT_BRANCH);
    let mut opts = RepositoryInitOptions::new();
    opts.initial_head(head).no_reinit(true);
    let repo = Repository::init_opts(path, &opts).map_err(|e| {
        create(Box::new(Libgit2 {
            code: e.code(),
            class: e.class(),
            message: e.message().to_string(),
        }))
    })?;
    tracing::info!(repo = %name, branch = head, "created repository");
    Ok(repo)
}

/// The branch to write: `--branch` (which must exist unless the repository has no branches at
/// all), else HEAD's branch, else [`DEFAULT_BRANCH`].
pub(super) fn resolve_branch(
    repo: &Repository,
    dest: &Destination,
    name: &str,
    scrub: &Scrubber,
) -> Result<String, GitError> {
    let branches: Vec<String> = repo
        .branches(Some(git2::BranchType::Local))
        .map_err(|e| GitError::Open {
            repo: name.to_string(),
            source: scrub.err(e),
        })?
        .filter_map(|b| b.ok())
        .filter_map(|(b, _)| b.name().ok().flatten().map(str::to_string))
        .collect();
    let head = repo.find_reference("HEAD").ok();
    let head_target = head
        .as_ref()
        .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string));
    let branch = match &dest.branch {
        Some(b) => {
            if !branches.is_empty() && !branches.contains(b) {
                return Err(GitError::MissingBranch {
                    branch: b.clone(),
                    repo: name.to_string(),
                    available: branches.join(", "),
                });
            }
            b.clone()
        }
        None => match head_target
            .as_deref()
            .and_then(|t| t.strip_prefix("refs/heads/"))
        {
            Some(b) => b.to_string(),
            None if branches.is_empty() => DEFAULT_BRANCH.to_string(),
            None => {
                return Err(GitError::DetachedHead {
                    repo: name.to_string(),
                });
            }
        },
    };
    // In an empty repository, HEAD follows the branch being created so a clone checks it out.
    if branches.is_empty() && head_target.as_deref() != Some(&format!("refs/heads/{branch}")) {
        repo.set_head(&format!("refs/heads/{branch}"))
            .map_err(|e| GitError::Open {
                repo: name.to_string(),
                source: scrub.err(e),
            })?;
    }
    Ok(branch)
}
