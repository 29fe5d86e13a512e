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

mod checkout;
mod commit;
mod error;
mod paths;
mod plan;
mod redact;
mod remote;
mod worktree;

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use git2::Oid;
use serde::Serialize;

pub use checkout::{Checkout, Keeper};
pub use error::{GitError, Libgit2};
pub use paths::check_destination;
pub use redact::{
    RemoteKind, has_credentials, is_ssh_url, is_url, redact_url, remote_kind, ssh_host,
};

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
    /// Asked once before a commit would record `fingerprint`: whether the caller can vouch
    /// that a run from the committed content with the same inputs writes the same content
    /// again (a fixed point). `false` commits without the trailer, so a later run does the
    /// full work. `None`: the fingerprint is recorded as given. Called only when a commit is
    /// actually written, so a costly check costs nothing on runs that change nothing.
    pub fingerprint_check: Option<&'a dyn Fn() -> bool>,
    /// `None`: `files` is the whole folder (a committed file not among them is removed).
    /// `Some(scope)`: `files` replaces only the files named in `scope` (paths relative to the
    /// folder); a file in `scope` not among `files` is removed, every other committed file
    /// stays as it is, unread. A caller that knows which files a change touches (one dataset
    /// of a thousand) neither renders nor hashes the others.
    pub scope: Option<&'a BTreeSet<String>>,
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

/// Seven-character abbreviation of a commit id, for messages.
/// For a process whose Git work is all local (a repository path, no push): keeps libgit2 from
/// parsing the system's CA bundle when it starts, which it does for every process (through
/// OpenSSL, for HTTPS remotes this process will never contact): about 4 ms of a 25 ms no-op
/// run. Points `SSL_CERT_FILE` at an empty file, whatever it was: nothing in such a process
/// verifies a certificate.
///
/// Must be called before any other Git operation, while the process has a single thread,
/// and only when nothing in the process will open a TLS connection (no cluster either).
pub fn local_only(dest: &Destination) {
    if dest.push || is_url(&dest.repo) {
        return;
    }
    // SAFETY: the caller runs this before starting any thread, so nothing reads or writes
    // the environment concurrently; no child process is started in such a run.
    unsafe { std::env::set_var("SSL_CERT_FILE", "/dev/null") };
}

pub fn short(oid: Oid) -> String {
    oid.to_string()[..7].to_string()
}
