//! Commits rendered files into a Git repository and pushes them safely. git2 only: this module
//! knows files, folders, branches and remotes, never Kubernetes objects.
//!
//! The caller hands over the complete content of one folder (`Destination::path`) that snaproll
//! owns. [`publish`] makes the branch's copy of that folder equal to it:
//!
//! - The new content is compared with the branch head in memory first (blob ids computed with
//!   `Oid::hash_object`), so a run that renders the same content writes no object at all.
//! - Otherwise the blobs, the trees along `path` (every other entry of the parent tree is reused
//!   as is) and the commit are written to the object database, and the branch ref moves once,
//!   with the expected old value (compare-and-swap): a crash leaves at most unreferenced objects,
//!   and a concurrent writer makes this run fail instead of losing its update.
//! - In a non-bare repository whose HEAD is the branch, the working tree and index follow the
//!   new commit; a dirty working tree under `path` is refused before anything is written.
//! - With a push, a non-fast-forward rejection fetches the new remote head; when the folder is
//!   unchanged there (the other writer touched other paths) the same files are re-applied onto
//!   it and the push retried with bounded exponential backoff, otherwise nothing is pushed
//!   ([`GitError::Stale`]: the caller decides again). The push is never forced.
//! - A large commit's blobs are written as one pack; a no-op can be proven from one commit by
//!   the caller's fingerprint ([`Request::fingerprint`], [`Checkout::head_fingerprint`]).
//!
//! Credentials never appear in errors or logs: URLs lose their userinfo and the token is
//! replaced wherever libgit2 might echo it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{
    AutotagOption, Cred, CredentialType, Direction, ErrorClass, ErrorCode, FetchOptions,
    ObjectType, Oid, PushOptions, RemoteCallbacks, Repository, RepositoryInitOptions, Signature,
    StatusOptions, Tree, TreeWalkMode, TreeWalkResult,
};
use serde::Serialize;

/// Commit trailer holding [`Request::fingerprint`].
const FINGERPRINT_TRAILER: &str = "Snaproll-Fingerprint";
/// Commit trailer holding the id of the folder's tree the fingerprint produced (`none`: empty).
const FOLDER_TRAILER: &str = "Snaproll-Folder";
/// Branch used when neither `--branch` nor the repository names one (new or empty repos).
pub const DEFAULT_BRANCH: &str = "main";
/// Author and committer name when no flag, env or git config gives one.
pub const FALLBACK_NAME: &str = "snaproll";
/// Author and committer email when no flag, env or git config gives one.
pub const FALLBACK_EMAIL: &str = "snaproll@localhost";
/// libgit2 calls the credentials callback again after every failed attempt; stop after this many.
const MAX_CREDENTIAL_ATTEMPTS: u32 = 6;
/// Longest pause between two push attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

const MODE_FILE: i32 = 0o100644;
const MODE_TREE: i32 = 0o040000;

/// Where the files go. `Debug` shows the URL without its secret (see [`redact_url`]).
#[derive(Clone)]
pub struct Destination {
    /// A local path (working or bare repository, created when missing) or a remote URL
    /// (`scheme://…` or `user@host:path`), which is cloned, committed to and pushed.
    pub repo: String,
    /// The folder, relative to the repository root, whose content is replaced.
    pub path: String,
    /// Branch to commit to: `None` is the repository's current branch (the remote's default
    /// branch for a URL), or [`DEFAULT_BRANCH`] in an empty repository.
    pub branch: Option<String>,
    /// Remote to push to and fetch from (the name given to the URL for a URL).
    pub remote: String,
    /// Push after committing. Always on for a URL.
    pub push: bool,
    /// Where to keep the bare clone of a URL (default: a temporary directory, removed after).
    pub workdir: Option<PathBuf>,
    /// Retries after a non-fast-forward rejection (attempts = retries + 1).
    pub push_retries: u32,
    /// Pause before the first retry; doubles on each retry, capped at 5 s.
    pub retry_delay: Duration,
    pub auth: Auth,
}

impl Destination {
    /// A destination with the CLI defaults: current branch, remote `origin`, 5 retries.
    pub fn new(repo: impl Into<String>, path: impl Into<String>) -> Destination {
        Destination {
            repo: repo.into(),
            path: path.into(),
            branch: None,
            remote: "origin".to_string(),
            push: false,
            workdir: None,
            push_retries: 5,
            retry_delay: Duration::from_millis(100),
            auth: Auth::default(),
        }
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination")
            .field("repo", &redact_url(&self.repo))
            .field("path", &self.path)
            .field("branch", &self.branch)
            .field("remote", &self.remote)
            .field("push", &self.push)
            .field("workdir", &self.workdir)
            .field("push_retries", &self.push_retries)
            .field("retry_delay", &self.retry_delay)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Credentials for remotes, tried in this order: SSH key file, SSH agent (SSH remotes); token,
/// git credential helper (HTTPS remotes).
#[derive(Clone, Default)]
pub struct Auth {
    pub ssh_key: Option<PathBuf>,
    /// HTTPS token (env `SNAPROLL_GIT_TOKEN`).
    pub token: Option<String>,
    /// User name sent with the token (env `SNAPROLL_GIT_USERNAME`, default `x-access-token`).
    pub username: Option<String>,
}

impl Auth {
    /// The SSH key from the flag, the token and user name from the environment.
    pub fn from_env(ssh_key: Option<PathBuf>) -> Auth {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Auth {
            ssh_key,
            token: var("SNAPROLL_GIT_TOKEN"),
            username: var("SNAPROLL_GIT_USERNAME"),
        }
    }
}

/// Hand-written so that a token never reaches a debug dump.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("ssh_key", &self.ssh_key)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("username", &self.username)
            .finish()
    }
}

/// One file of the folder.
#[derive(Clone, Debug)]
pub struct File {
    /// Path relative to `Destination::path`, `/`-separated.
    pub path: String,
    pub content: Vec<u8>,
    /// What the file holds, one line each, for the commit message (empty: just the file).
    pub objects: Vec<String>,
}

/// Describes a file that is being removed (the caller knows its format); `None` in
/// [`Request::describe_removed`] lists removed files by name only.
pub type Describe<'a> = &'a dyn Fn(&str, &[u8]) -> Vec<String>;

/// What to commit: the complete content of the folder plus the commit metadata.
pub struct Request<'a> {
    pub files: &'a [File],
    /// Rollout name and generation, for the commit summary.
    pub rollout: &'a str,
    pub generation: &'a str,
    /// Author/committer name and email; `None` falls back to git config, then
    /// [`FALLBACK_NAME`] / [`FALLBACK_EMAIL`].
    pub author_name: Option<&'a str>,
    pub author_email: Option<&'a str>,
    pub describe_removed: Option<Describe<'a>>,
    /// The caller's digest of everything this run's files follow from (spec bytes, templates,
    /// snaproll version, the decided plan and generations; one token, no spaces), written into
    /// the commit as a trailer bound to the folder it produced (see
    /// [`Checkout::head_fingerprint`]). When the branch head already carries the same
    /// fingerprint for its folder, publishing writes nothing and skips the comparison.
    pub fingerprint: Option<&'a str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Changed,
    Removed,
}

/// One file that differs between the branch and the request.
#[derive(Clone, Debug, Serialize)]
pub struct FileChange {
    /// Path relative to the repository root.
    pub path: String,
    pub kind: ChangeKind,
    /// What the file holds (new content; old content for a removed file).
    pub objects: Vec<String>,
    /// Old and new content: filled by [`preview`] only, for diffs.
    #[serde(skip)]
    pub old: Option<Vec<u8>>,
    #[serde(skip)]
    pub new: Option<Vec<u8>>,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The commit this run made; `None` when the branch already had the content.
    pub commit: Option<Oid>,
    /// The branch head after the run (`None`: still unborn).
    pub head: Option<Oid>,
    pub branch: String,
    pub path: String,
    /// The commit summary line (of the commit made, or that would be made).
    pub summary: String,
    pub changes: Vec<FileChange>,
    /// Whether a push updated the remote.
    pub pushed: bool,
    /// Push attempts made (0 without a push).
    pub push_attempts: u32,
}

impl Outcome {
    pub fn count(&self, kind: ChangeKind) -> usize {
        self.changes.iter().filter(|c| c.kind == kind).count()
    }
}

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

/// Commits the folder content of `req` to `dest` (and pushes when asked or for a URL).
pub fn publish(dest: &Destination, req: &Request<'_>) -> Result<Outcome, GitError> {
    Checkout::open(dest)?.publish(req)
}

/// What [`publish`] would commit, with old and new contents, writing nothing to the repository
/// (a URL is still fetched, into a temporary directory).
pub fn preview(dest: &Destination, req: &Request<'_>) -> Result<Outcome, GitError> {
    Checkout::open(dest)?.preview(req)
}

/// The files the branch holds under the folder (see [`Checkout::read`]).
pub fn read(dest: &Destination) -> Result<Vec<File>, GitError> {
    Checkout::open(dest)?.read()
}

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

/// A repository-relative path of a file in `folder`, relative to the folder ("" for the folder).
fn rel_key<'p>(folder: &str, path: &'p str) -> &'p str {
    path[folder.len()..].trim_start_matches('/')
}

/// Whether `repo` is a remote URL rather than a local path.
pub fn is_url(repo: &str) -> bool {
    if repo.contains("://") {
        return true;
    }
    // scp-like `user@host:path`: an `@` and a `:` before any `/`.
    let head = repo.split('/').next().unwrap_or_default();
    if head.contains('@') && head.contains(':') {
        return true;
    }
    // Git reads any text with a `:` before its first `/` as scp-like, so a password holding a
    // `/` (`bot:pa/ss@host:org/x`) still makes a URL, never a path to print.
    repo.contains('@') && head.contains(':')
}

/// A URL's credentials split off: what may be shown and stored, and the secret part.
struct UrlCredentials {
    /// The URL without the secret: shown in messages and stored as the clone's remote URL.
    public: String,
    /// User and password taken out of the URL (percent-decoded, as Git reads them), supplied
    /// through the credentials callback.
    cred: Option<(String, String)>,
    /// The secret as written in the URL (the password, or a token given as the user name).
    raw_secret: Option<String>,
}

/// Splits the secret off a URL of any form Git accepts. HTTP(S) URLs lose their userinfo
/// whole (`https://bot:TOKEN@host/x` and the token form `https://TOKEN@host/x` both become
/// `https://host/x`): the user and password go to the credentials callback instead. Other
/// forms (`ssh://`, `file://`, `git://`, scp-like `user:pass@host:path`) lose only a password;
/// a user name is not a secret (`ssh://git@host/x` is unchanged).
///
/// Hand-written rather than `url::Url`: the url crate ends the authority at the first `/`,
/// `?` or `#`, so it misreads or refuses exactly the URLs whose secret holds one of those
/// (`https://bot:s3cr/3t@host/x` parses as host `bot`, port `s3cr`), and scp-like remotes are
/// not URLs at all. Git's own credential parsing is textual too. So the userinfo ends at the
/// last `@` of the authority and, when the authority has none but an `@` follows, at the last
/// `@` of the whole text: a URL that cannot be read cleanly is shown with less, never with its
/// secret (an `@` in a path must be written `%40`). Decoding uses the url crate's
/// `percent-encoding`.
fn split_credentials(url: &str) -> UrlCredentials {
    let unchanged = || UrlCredentials {
        public: url.to_string(),
        cred: None,
        raw_secret: None,
    };
    let (prefix, userinfo, host, http) = if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let at = match rest[..authority_end].rfind('@') {
            Some(at) => at,
            None => match rest.rfind('@') {
                Some(at) => at,
                None => return unchanged(),
            },
        };
        let http = matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https");
        (format!("{scheme}://"), &rest[..at], &rest[at + 1..], http)
    } else {
        // scp-like `[user[:password]@]host:path`: the userinfo ends at the last `@` before the
        // `:` that starts the path (the last `:`, as paths seldom hold one and passwords may).
        let Some(colon) = url.rfind(':') else {
            return unchanged();
        };
        let Some(at) = url[..colon].rfind('@') else {
            return unchanged();
        };
        (String::new(), &url[..at], &url[at + 1..], false)
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let cred = Some((decode(user), decode(password.unwrap_or(""))));
    let raw_secret = match password {
        Some(p) if !p.is_empty() => Some(p.to_string()),
        _ if http && !user.is_empty() => Some(user.to_string()),
        _ => None,
    };
    if http {
        return UrlCredentials {
            public: format!("{prefix}{host}"),
            cred,
            raw_secret,
        };
    }
    if password.is_none() {
        return unchanged();
    }
    UrlCredentials {
        public: format!("{prefix}{user}@{host}"),
        cred,
        raw_secret,
    }
}

/// Whether `url` carries a secret (a password, or a token as an HTTP(S) user name).
pub fn has_credentials(url: &str) -> bool {
    split_credentials(url).raw_secret.is_some()
}

/// `url` without its secret (see [`split_credentials`]): `https://bot:TOKEN@host/x` →
/// `https://host/x`, `ssh://git:pw@host/x` → `ssh://git@host/x`, `bot:pw@host:x` →
/// `bot@host:x`.
pub fn redact_url(url: &str) -> String {
    split_credentials(url).public
}

fn invalid(what: &'static str, value: &str, reason: &str) -> GitError {
    GitError::InvalidInput {
        what,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Validates `--path` and `--branch` (invalid input, exit 2); returns the path's components.
pub fn check_destination(dest: &Destination) -> Result<Vec<String>, GitError> {
    let comps = components(&dest.path).map_err(|r| {
        invalid(
            "--path",
            &dest.path,
            &format!("{r}; use a relative folder like rollouts/NAME"),
        )
    })?;
    if let Some(b) = &dest.branch
        && !git2::Reference::is_valid_name(&format!("refs/heads/{b}"))
    {
        return Err(invalid("--branch", b, "not a valid branch name"));
    }
    Ok(comps)
}

/// Validates the file names and the fingerprint of a request.
fn check_files(req: &Request<'_>) -> Result<(), GitError> {
    if let Some(fp) = req.fingerprint
        && (fp.is_empty() || fp.len() > 256 || fp.chars().any(|c| c.is_whitespace()))
    {
        return Err(invalid(
            "fingerprint",
            fp,
            "must be one token of at most 256 characters",
        ));
    }
    let mut seen = BTreeSet::new();
    for f in req.files {
        components(&f.path).map_err(|r| invalid("file name", &f.path, &r))?;
        if !seen.insert(f.path.as_str()) {
            return Err(invalid("file name", &f.path, "given twice"));
        }
    }
    // A file may not also be a folder of another file.
    for f in req.files {
        let mut prefix = String::new();
        for c in f.path.split('/') {
            if !prefix.is_empty() && seen.contains(prefix.as_str()) {
                return Err(invalid(
                    "file name",
                    &f.path,
                    &format!("`{prefix}` is also a file"),
                ));
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
        }
    }
    Ok(())
}

fn components(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Err("empty".to_string());
    }
    if path.starts_with('/') || path.contains('\\') {
        return Err("must be a relative path with `/` separators".to_string());
    }
    let comps: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    for c in &comps {
        match c.as_str() {
            "" | "." | ".." => return Err(format!("contains `{c}`")),
            ".git" => return Err("contains `.git`".to_string()),
            _ => {}
        }
    }
    Ok(comps)
}

/// The file-level difference between the branch's folder and the request, computed without
/// writing anything.
struct Plan {
    changes: Vec<FileChange>,
    /// Request files with their blob ids, by path relative to the folder.
    new: Vec<(usize, Oid)>,
}

impl Plan {
    fn new(
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
        for p in old.keys().filter(|p| !present.contains(p.as_str())) {
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
    fn summary(&self, req: &Request<'_>) -> String {
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

    fn message(&self, req: &Request<'_>, folder: &str, folder_id: Option<Oid>) -> String {
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
            for c in items {
                let file = c.path.rsplit('/').next().unwrap_or(&c.path);
                if c.objects.is_empty() {
                    m.push_str(&format!("- {file}\n"));
                }
                for o in &c.objects {
                    m.push_str(&format!("- {o} [{file}]\n"));
                }
            }
        }
        m.push_str(&format!("\nPath: {folder}\n"));
        if let Some(fp) = req.fingerprint {
            let tree = folder_id
                .map(|o| o.to_string())
                .unwrap_or("none".to_string());
            m.push_str(&format!(
                "{FINGERPRINT_TRAILER}: {fp}\n{FOLDER_TRAILER}: {tree}\n"
            ));
        }
        m
    }

    fn outcome(
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

/// Removes credentials from text libgit2 produced.
#[derive(Clone, Default)]
struct Scrubber {
    secrets: Vec<(String, String)>,
}

impl Scrubber {
    /// Replaces the URL as given by its public form, then the secrets themselves (the URL's
    /// password or token, the env token) wherever libgit2 might echo them. User names and
    /// host names are not secrets and stay as they are.
    fn new(dest: &Destination) -> Scrubber {
        let mut secrets = Vec::new();
        if is_url(&dest.repo) {
            let split = split_credentials(&dest.repo);
            if split.public != dest.repo {
                secrets.push((dest.repo.clone(), split.public));
            }
            if let Some((user, password)) = split.cred {
                let secret = if password.is_empty() { user } else { password };
                secrets.push((secret, "***".to_string()));
            }
            // As written in the URL too, when that differs (percent-encoded).
            if let Some(raw) = split.raw_secret {
                secrets.push((raw, "***".to_string()));
            }
        }
        if let Some(t) = &dest.auth.token {
            secrets.push((t.clone(), "***".to_string()));
        }
        Scrubber { secrets }
    }

    fn text(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (secret, with) in &self.secrets {
            if !secret.is_empty() {
                s = s.replace(secret.as_str(), with);
            }
        }
        s
    }

    fn err(&self, e: git2::Error) -> Libgit2 {
        Libgit2 {
            code: e.code(),
            class: e.class(),
            message: self.text(e.message()),
        }
    }
}

/// An open repository and the branch being written.
struct Session {
    dest: Destination,
    repo: Repository,
    /// Display name of the repository (redacted URL or the path).
    name: String,
    branch: String,
    refname: String,
    url_mode: bool,
    scrub: Scrubber,
    /// The clone's temporary directory, removed on drop.
    _tmp: Option<tempfile::TempDir>,
}

/// One file the working tree changes to follow a commit.
struct WtChange {
    /// Path relative to the repository root.
    rel: PathBuf,
    deleted: bool,
    /// Mode and blob id in the new commit (unused for a deletion).
    mode: i32,
    id: Oid,
}

/// From this many new blobs on, a commit writes them as one pack rather than loose objects
/// (git's own `transfer.unpackLimit` default draws the same line for fetched objects).
const PACK_MIN_OBJECTS: usize = 100;

/// A version-2 pack stream of `blobs`, undeltified, each zlib-compressed at level 1 (git's
/// `core.looseCompression` default) with one compressor reused throughout, ending with the
/// SHA-1 of everything before it (see gitformat-pack(5)).
fn pack_stream(blobs: &[&[u8]]) -> std::io::Result<Vec<u8>> {
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

/// What a dirty folder is (see [`Session::unfinished`]).
enum Unfinished {
    /// snaproll's own unfinished update: these changes complete it.
    Complete(Vec<WtChange>),
    /// It would be, but tracked files outside the folder changed too (listed).
    Blocked(Vec<String>),
    /// Someone's edits.
    No,
}

/// Up to three paths, then a count of the rest.
fn list(paths: &[String]) -> String {
    let mut s = paths.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if paths.len() > 3 {
        s.push_str(&format!(" and {} more", paths.len() - 3));
    }
    s
}

/// How a single push attempt ended.
enum PushResult {
    Pushed,
    Rejected(String),
}

impl Session {
    /// Opens (or, when `create`, creates) the repository and resolves the branch.
    fn open(dest: &Destination, create: bool) -> Result<Session, GitError> {
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
    fn clone_url(dest: &Destination, scrub: Scrubber) -> Result<Session, GitError> {
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

    fn repo_err(&self, action: impl Into<String>) -> impl FnOnce(git2::Error) -> GitError + '_ {
        let action = action.into();
        move |e| GitError::Repo {
            action,
            source: self.scrub.err(e),
        }
    }

    fn branch_head(&self) -> Result<Option<Oid>, GitError> {
        match self.repo.refname_to_id(&self.refname) {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.repo_err(format!("reading {}", self.refname))(e)),
        }
    }

    fn tree_of(&self, commit: Option<Oid>) -> Result<Option<Tree<'_>>, GitError> {
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

    fn blob_content(&self, oid: Oid) -> Result<Vec<u8>, GitError> {
        self.repo
            .find_blob(oid)
            .map(|b| b.content().to_vec())
            .map_err(self.repo_err(format!("reading blob {oid}")))
    }

    /// The files under the folder in `root`: path relative to the folder → (blob id, mode).
    /// A blob where the folder should be is listed under the empty path.
    fn read_folder(
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

    /// Whether HEAD is this branch in a repository with a working tree.
    fn has_worktree(&self) -> bool {
        !self.url_mode
            && !self.repo.is_bare()
            && self
                .repo
                .find_reference("HEAD")
                .ok()
                .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string))
                .is_some_and(|t| t == self.refname)
    }

    /// Refuses when any of `also` (or anything under `folder`) is modified, staged or
    /// untracked in the working tree. Without `also` (the check before a run commits), a dirty
    /// folder that is exactly snaproll's own unfinished update is completed instead (see
    /// [`Session::unfinished`]).
    fn check_clean(&self, folder: &str, also: &BTreeSet<String>) -> Result<(), GitError> {
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
    fn unfinished(
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

    fn signature(&self, req: &Request<'_>) -> Result<Signature<'static>, GitError> {
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
    fn build(
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
                &plan.message(req, folder, sub),
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
    fn write_pack(&self, blobs: &[&[u8]]) -> Result<(), GitError> {
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
    fn write_dir(&self, entries: &[(&str, Oid)]) -> Result<Oid, GitError> {
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
    fn splice(
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
    fn move_branch(&self, old: Option<Oid>, new: Oid, msg: &str) -> Result<(), GitError> {
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

    fn stale(&self, seen: Option<Oid>, now: Option<Oid>, done: &str) -> GitError {
        let id = |o: Option<Oid>| o.map(short).unwrap_or_else(|| "none".to_string());
        GitError::Stale {
            branch: self.branch.clone(),
            path: self.dest.path.clone(),
            seen: id(seen),
            now: id(now),
            done: done.to_string(),
        }
    }

    /// The id of what `commit` holds at the folder (a tree, or a blob in the way), `None` when
    /// the folder or the commit is absent. Two commits with the same id hold the same folder.
    fn folder_id(&self, commit: Option<Oid>) -> Result<Option<Oid>, GitError> {
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
    fn fingerprint_at(&self, commit: Option<Oid>) -> Result<Option<String>, GitError> {
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

    /// Whether a decision made from the folder at `seen` still holds at `now`: the folder is
    /// the same there, or (when `seen` has commits `now` lacks) the folder at `now` is still
    /// the one at their fork point, so the other side never touched it. Either way the other
    /// writer changed only other paths and rebuilding this run's commit on `now` is safe.
    fn decision_holds(&self, seen: Option<Oid>, now: Option<Oid>) -> Result<bool, GitError> {
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

    /// The files the working tree must change to go from commit `old` to `new`.
    fn worktree_changes(&self, old: Option<Oid>, new: Oid) -> Result<Vec<WtChange>, GitError> {
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
    fn check_writable(&self, changes: &[WtChange]) -> Result<(), GitError> {
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
    fn update_worktree(
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
                Ok(meta) => index_entry(Some(&meta), c.id, c.mode, rel_str.as_bytes()),
                Err(e) => {
                    first_error.get_or_insert(fail(e));
                    index_entry(None, c.id, c.mode, rel_str.as_bytes())
                }
            };
            index.add(&entry).map_err(g)?;
        }
        index.write().map_err(g)?;
        if let Some(e) = first_error {
            return Err(e);
        }
        tracing::debug!(elapsed = ?started.elapsed(), files = changes.len(), "working tree updated");
        Ok(())
    }

    /// Commits and moves the branch (and working tree). Returns the plan and the new commit.
    fn commit_onto(
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
        let changes = if worktree {
            let changes = self.worktree_changes(parent, c)?;
            self.check_writable(&changes)?;
            Some(changes)
        } else {
            None
        };
        self.move_branch(parent, c, &format!("snaproll: {}", plan.summary(req)))?;
        tracing::info!(commit = %c, branch = %self.branch, "committed");
        if let Some(changes) = changes {
            self.update_worktree(req.files, c, &changes)?;
        }
        Ok((plan, Some(c)))
    }

    /// `seen`: the branch head a read of this run decided on (`None`: not read, use the head).
    fn publish(
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
    fn push_with_retries(
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
            let changes = if worktree {
                let changes = self.worktree_changes(Some(local), target)?;
                self.check_writable(&changes)?;
                Some(changes)
            } else {
                None
            };
            let msg = if holds {
                "snaproll: rebuilt on the remote head"
            } else {
                "snaproll: reset to the remote head (decision was stale)"
            };
            self.move_branch(Some(local), target, msg)?;
            if let Some(changes) = changes {
                // After a reset the folder is the remote's, not this run's files.
                let files = if holds { req.files } else { &[] };
                self.update_worktree(files, target, &changes)?;
            }
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
    fn check_only_ours(&self, local: Oid, remote: Oid) -> Result<(), GitError> {
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

    fn remote_url(&self) -> Result<String, GitError> {
        let remote = self
            .repo
            .find_remote(&self.dest.remote)
            .map_err(|_| GitError::NoRemote {
                repo: self.name.clone(),
                remote: self.dest.remote.clone(),
            })?;
        Ok(self.scrub.text(&redact_url(remote.url().unwrap_or("?"))))
    }

    /// Callbacks with credentials (bounded) and, for pushes, the per-ref rejection.
    fn callbacks<'a>(
        &'a self,
        tries: &'a Cell<u32>,
        auth_failure: &'a RefCell<Option<String>>,
    ) -> RemoteCallbacks<'a> {
        let auth = &self.dest.auth;
        let mut cb = RemoteCallbacks::new();
        let url_cred = if self.url_mode {
            split_credentials(&self.dest.repo).cred
        } else {
            None
        };
        let mut tried_url = false;
        let mut tried_key = false;
        let mut tried_agent = false;
        let mut tried_token = false;
        let mut tried_helper = false;
        let mut tried_default = false;
        cb.credentials(move |url, user_from_url, allowed| {
            tries.set(tries.get() + 1);
            let give_up = |reason: &str| {
                *auth_failure.borrow_mut() = Some(reason.to_string());
                Err(git2::Error::from_str(reason))
            };
            if tries.get() > MAX_CREDENTIAL_ATTEMPTS {
                return give_up(&format!(
                    "gave up after {MAX_CREDENTIAL_ATTEMPTS} attempts; check the credentials"
                ));
            }
            let user = user_from_url.unwrap_or("git");
            if allowed.contains(CredentialType::SSH_KEY) {
                if let Some(key) = &auth.ssh_key
                    && !tried_key
                {
                    tried_key = true;
                    return Cred::ssh_key(user, None, key, None);
                }
                if !tried_agent {
                    tried_agent = true;
                    return Cred::ssh_key_from_agent(user);
                }
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                if let Some((user, password)) = &url_cred
                    && !tried_url
                {
                    tried_url = true;
                    return Cred::userpass_plaintext(user, password);
                }
                if let Some(token) = &auth.token
                    && !tried_token
                {
                    tried_token = true;
                    let user = auth.username.as_deref().unwrap_or("x-access-token");
                    return Cred::userpass_plaintext(user, token);
                }
                if !tried_helper {
                    tried_helper = true;
                    if let Ok(config) = self.repo.config()
                        && let Ok(c) = Cred::credential_helper(&config, url, user_from_url)
                    {
                        return Ok(c);
                    }
                }
            }
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(user);
            }
            if allowed.contains(CredentialType::DEFAULT) && !tried_default {
                tried_default = true;
                return Cred::default();
            }
            give_up(
                "no credentials left to try (set --ssh-key, an SSH agent, SNAPROLL_GIT_TOKEN or a git credential helper)",
            )
        });
        cb
    }

    /// Turns a transfer failure into an auth error when the credentials callback gave up.
    fn transfer_error(
        &self,
        e: git2::Error,
        auth_failure: &RefCell<Option<String>>,
        url: String,
        wrap: fn(String, Libgit2) -> GitError,
    ) -> GitError {
        if let Some(reason) = auth_failure.borrow_mut().take() {
            return GitError::Auth { url, reason };
        }
        if e.class() == ErrorClass::Http && e.code() == ErrorCode::Auth {
            return GitError::Auth {
                url,
                reason: self.scrub.err(e).message,
            };
        }
        wrap(url, self.scrub.err(e))
    }

    /// The remote's default branch and its branch names (one connection, no download).
    fn list_remote(&self) -> Result<(Option<String>, BTreeSet<String>), GitError> {
        let url = self.remote_url()?;
        let tries = Cell::new(0);
        let failure = RefCell::new(None);
        let mut remote = self
            .repo
            .find_remote(&self.dest.remote)
            .map_err(self.repo_err("reading the remote"))?;
        let fetch_err = |url, source| GitError::Fetch { url, source };
        let conn = remote
            .connect_auth(
                Direction::Fetch,
                Some(self.callbacks(&tries, &failure)),
                None,
            )
            .map_err(|e| self.transfer_error(e, &failure, url.clone(), fetch_err))?;
        let heads: BTreeSet<String> = conn
            .list()
            .map_err(|e| self.transfer_error(e, &failure, url.clone(), fetch_err))?
            .iter()
            .filter_map(|h| h.name().strip_prefix("refs/heads/").map(str::to_string))
            .collect();
        let default = conn
            .default_branch()
            .ok()
            .and_then(|b| b.as_str().ok().map(str::to_string))
            .and_then(|b| b.strip_prefix("refs/heads/").map(str::to_string));
        Ok((default, heads))
    }

    /// Fetches the branch into `refs/remotes/<remote>/<branch>`; returns the remote head.
    fn fetch(&self) -> Result<Option<Oid>, GitError> {
        let url = self.remote_url()?;
        let tries = Cell::new(0);
        let failure = RefCell::new(None);
        let mut remote = self
            .repo
            .find_remote(&self.dest.remote)
            .map_err(self.repo_err("reading the remote"))?;
        let tracking = format!("refs/remotes/{}/{}", self.dest.remote, self.branch);
        let mut fo = FetchOptions::new();
        fo.remote_callbacks(self.callbacks(&tries, &failure))
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        let spec = format!("+refs/heads/{}:{tracking}", self.branch);
        remote
            .fetch(&[spec.as_str()], Some(&mut fo), Some("snaproll: fetch"))
            .map_err(|e| {
                self.transfer_error(e, &failure, url.clone(), |url, source| GitError::Fetch {
                    url,
                    source,
                })
            })?;
        match self.repo.refname_to_id(&tracking) {
            Ok(o) => Ok(Some(o)),
            Err(_) => Ok(None),
        }
    }

    /// One push of the branch, never forced.
    fn push_once(&self) -> Result<PushResult, GitError> {
        let url = self.remote_url()?;
        let tries = Cell::new(0);
        let failure = RefCell::new(None);
        let rejected: RefCell<Option<String>> = RefCell::new(None);
        let mut remote = self
            .repo
            .find_remote(&self.dest.remote)
            .map_err(self.repo_err("reading the remote"))?;
        let mut cb = self.callbacks(&tries, &failure);
        cb.push_update_reference(|_refname, status| {
            if let Some(s) = status {
                *rejected.borrow_mut() = Some(self.scrub.text(s));
            }
            Ok(())
        });
        let mut po = PushOptions::new();
        po.remote_callbacks(cb);
        let spec = format!("{0}:{0}", self.refname);
        match remote.push(&[spec.as_str()], Some(&mut po)) {
            Ok(()) => {}
            Err(e) if e.code() == ErrorCode::NotFastForward => {
                return Ok(PushResult::Rejected(
                    "non-fast-forward (the remote branch moved)".to_string(),
                ));
            }
            Err(e) => {
                return Err(
                    self.transfer_error(e, &failure, url, |url, source| GitError::Push {
                        url,
                        source,
                    }),
                );
            }
        }
        drop(po);
        match rejected.into_inner() {
            Some(reason) => Ok(PushResult::Rejected(reason)),
            None => Ok(PushResult::Pushed),
        }
    }
}

/// Creates a non-bare repository whose HEAD is the branch to write (unborn until the commit).
fn init_repo(path: &Path, dest: &Destination, name: &str) -> Result<Repository, GitError> {
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
fn resolve_branch(
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

/// An index entry for a file just written: its stat data and the blob id already known. Without
/// stat data (the file could not be written) every field is zero, so git re-reads the file.
fn index_entry(
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

/// Seven-character abbreviation of a commit id, for messages.
pub fn short(oid: Oid) -> String {
    oid.to_string()[..7].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("https://example.com/x.git"));
        assert!(is_url("file:///tmp/x.git"));
        assert!(is_url("git@github.com:org/repo.git"));
        assert!(!is_url("/tmp/gitops"));
        assert!(!is_url("./gitops"));
        assert!(!is_url("dir/with@at:colon/x"));
    }

    #[test]
    fn only_the_secret_of_a_url_is_redacted() {
        assert_eq!(
            redact_url("https://user:s3cret@example.com/x.git"),
            "https://example.com/x.git"
        );
        assert_eq!(
            redact_url("ssh://git:pw@example.com/x.git"),
            "ssh://git@example.com/x.git"
        );
        assert_eq!(
            redact_url("https://ghp_token123@example.com/x.git"),
            "https://example.com/x.git"
        );
        assert_eq!(
            redact_url("https://example.com/x.git"),
            "https://example.com/x.git"
        );
        assert_eq!(
            redact_url("ssh://git@127.0.0.1:1/x.git"),
            "ssh://git@127.0.0.1:1/x.git"
        );
        assert_eq!(redact_url("git@host:org/x.git"), "git@host:org/x.git");
    }

    #[test]
    fn secrets_holding_url_delimiters_are_redacted_in_every_form() {
        let secret = "s3:cr/3t@x%2F#q?";
        let cases = [
            (
                format!("https://bot:{secret}@host/x.git"),
                "https://host/x.git",
            ),
            (format!("http://{secret}@host:8080/x"), "http://host:8080/x"),
            (
                format!("ssh://git:{secret}@host:22/x.git"),
                "ssh://git@host:22/x.git",
            ),
            (
                format!("file://me:{secret}@/srv/x.git"),
                "file://me@/srv/x.git",
            ),
            (format!("bot:{secret}@host:org/x.git"), "bot@host:org/x.git"),
        ];
        for (url, public) in cases {
            assert!(is_url(&url), "{url}");
            assert_eq!(redact_url(&url), public, "{url}");
            assert!(has_credentials(&url), "{url}");
        }
        // The token form, and a password given percent-encoded: the callback gets it decoded.
        let split = split_credentials("https://bot:a%2Fb%40c@host/x");
        assert_eq!(split.cred, Some(("bot".into(), "a/b@c".into())));
        assert_eq!(split.raw_secret.as_deref(), Some("a%2Fb%40c"));
        assert!(has_credentials("https://ghp_tok@host/x"));
        assert!(!has_credentials("ssh://git@host/x"));
        assert!(!has_credentials("git@host:org/x"));
        assert!(!has_credentials("https://host/x"));
    }

    #[test]
    fn paths_must_be_relative_and_plain() {
        assert!(components("rollouts/demo").is_ok());
        assert!(components("rollouts/demo/").is_ok());
        for bad in ["", "/abs", "a/../b", "a//b", ".git/x", "./a"] {
            assert!(components(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scrubber_hides_secrets_and_leaves_other_words_alone() {
        let mut d = Destination::new("https://bot:tok123@example.com/x.git", "p");
        d.auth.token = Some("tok456".into());
        let s = Scrubber::new(&d);
        assert_eq!(
            s.text("failed https://bot:tok123@example.com/x.git with tok456 and bot:tok123; robot"),
            "failed https://example.com/x.git with *** and bot:***; robot"
        );
        let s = Scrubber::new(&Destination::new("ssh://git@127.0.0.1:1/x.git", "p"));
        assert_eq!(
            s.text("cannot reach ssh://git@127.0.0.1:1/x.git: git said no"),
            "cannot reach ssh://git@127.0.0.1:1/x.git: git said no"
        );
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
        let req = Request {
            files: &files,
            rollout: "demo",
            generation: "g1",
            author_name: Some("t"),
            author_email: Some("t@example.com"),
            describe_removed: None,
            fingerprint: None,
        };
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
}
