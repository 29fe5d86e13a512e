//! Why a Git operation failed.

use std::fmt;

use git2::{ErrorClass, ErrorCode};

/// A libgit2 failure, its message cleaned of credentials. Kept as the `source` of [`GitError`]
/// so callers can still match on code and class.
#[derive(Debug)]
pub struct Libgit2 {
    pub code: ErrorCode,
    pub class: ErrorClass,
    pub message: String,
}

impl fmt::Display for Libgit2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Libgit2 {}

/// Why a Git operation failed. Every variant leaves the branch where it was (or, for a push,
/// at the local commit): nothing is half-written. Exit code 3, except invalid input (2).
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// `--path`, a file name or `--branch` is not usable. (exit 2)
    #[error("{what} `{value}`: {reason}")]
    InvalidInput {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// The local path exists but is neither a repository nor an empty directory.
    #[error("{repo} is not a Git repository (and not an empty directory, so it was not created)")]
    NotARepo { repo: String },
    /// The repository could not be opened.
    #[error("cannot open repository {repo}")]
    Open {
        repo: String,
        #[source]
        source: Libgit2,
    },
    /// The repository (or its directory) could not be created.
    #[error("cannot create repository {repo}")]
    Create {
        repo: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `--branch` names a branch that does not exist in a repository that has commits.
    #[error(
        "branch `{branch}` does not exist in {repo} (branches: {available}); create it first or pass an existing --branch"
    )]
    MissingBranch {
        branch: String,
        repo: String,
        available: String,
    },
    /// HEAD is detached and no `--branch` was given.
    #[error("{repo}: HEAD is detached; pass --branch")]
    DetachedHead { repo: String },
    /// Uncommitted or untracked files in the working tree where the commit would write, and
    /// they are not snaproll's own unfinished update (which a run completes by itself).
    /// `state` says which of HEAD and the working tree is newer; `remedy` names the exact
    /// command that brings the folder back to HEAD.
    #[error("{repo}: uncommitted changes under {path} ({files}); {state}; {remedy}, then re-run")]
    Dirty {
        repo: String,
        path: String,
        files: String,
        state: String,
        remedy: String,
    },
    /// Reading or writing objects, refs or the index failed.
    #[error("{action}")]
    Repo {
        action: String,
        #[source]
        source: Libgit2,
    },
    /// The branch moved since this run read it (another writer) and the folder differs there:
    /// what this run decided was decided from an older state, so it was neither committed nor
    /// pushed. The caller decides again from a fresh [`Checkout`] (see [`GitError::is_stale`]).
    /// A writer that touched only other paths does not cause this: the commit is rebuilt on
    /// the new head instead.
    #[error(
        "branch `{branch}` moved since this run read it ({seen} -> {now}) and {path} changed there; {done}; decide again from the new head (re-run)"
    )]
    Stale {
        branch: String,
        path: String,
        /// The head the decision was made from (short id, `none` for an unborn branch).
        seen: String,
        /// The head found instead.
        now: String,
        /// What became of this run's work: nothing committed, or nothing pushed (and, for a
        /// local repository, its branch now follows the remote head).
        done: String,
    },
    /// A file the commit changes cannot be written in the working tree; checked before the
    /// branch moves, so nothing was committed.
    #[error("{repo}: cannot write {path} in the working tree, so nothing was committed")]
    Unwritable {
        repo: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Writing a file failed after the checks passed (disk full, a race). The commit is complete
    /// on the branch and the index matches it; the working tree lags behind.
    #[error(
        "committed {commit} to {branch}, but writing the working tree failed; the index matches the commit, restore the files with `git restore --source=HEAD --staged --worktree -- {pathspec}`"
    )]
    Worktree {
        branch: String,
        commit: String,
        /// What to restore: the folder, or `.` when a rebuild also changed other files.
        pathspec: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `--push` on a repository without the remote.
    #[error("{repo} has no remote `{remote}`; add it (git remote add {remote} URL) or drop --push")]
    NoRemote { repo: String, remote: String },
    /// Connecting to or fetching from the remote failed.
    #[error("cannot fetch from {url}")]
    Fetch {
        url: String,
        #[source]
        source: Libgit2,
    },
    /// Authentication kept failing; libgit2 was stopped from asking forever.
    #[error("authentication to {url} failed: {reason}")]
    Auth { url: String, reason: String },
    /// Sending to the remote failed (network, permissions).
    #[error("cannot push to {url}")]
    Push {
        url: String,
        #[source]
        source: Libgit2,
    },
    /// The remote kept rejecting the push. `kept` says what became of the commit, which
    /// depends on the mode: a local repository keeps it on its branch (the next run pushes it);
    /// a URL's clone is removed, or reset to the remote by the next run with `--workdir`.
    #[error("push of {branch} to {url} rejected after {attempts} attempt(s): {reason}; {kept}")]
    PushRejected {
        url: String,
        branch: String,
        attempts: u32,
        reason: String,
        kept: String,
    },
    /// The local branch has commits the remote lacks that change more than `path`; snaproll
    /// will not rebuild over someone else's work.
    #[error(
        "cannot rebuild {branch} on {remote}: the local branch has unpushed commits that change files outside {path}; integrate them (git pull --rebase) and re-run"
    )]
    Diverged {
        branch: String,
        remote: String,
        path: String,
    },
    /// A temporary or work directory for a clone could not be created.
    #[error("cannot create a work directory for the clone")]
    Workdir {
        #[source]
        source: std::io::Error,
    },
}

impl GitError {
    /// The process exit code (documented under `--help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            GitError::InvalidInput { .. } => crate::exit::INVALID,
            _ => crate::exit::GIT,
        }
    }

    /// Whether the run decided from a state that is no longer the branch head: nothing was
    /// committed or pushed, and opening a new [`Checkout`] (which starts from the current head),
    /// reading, deciding and publishing again is the remedy.
    pub fn is_stale(&self) -> bool {
        matches!(self, GitError::Stale { .. })
    }
}
