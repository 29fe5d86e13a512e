//! Talking to the remote: credentials, listing, fetching and pushing.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use git2::{
    AutotagOption, Cred, CredentialType, Direction, ErrorClass, ErrorCode, FetchOptions, Oid,
    PushOptions, RemoteCallbacks,
};

use super::checkout::Session;
use super::redact::split_credentials;
use super::*;

/// libgit2 calls the credentials callback again after every failed attempt; stop after this many.
pub(super) const MAX_CREDENTIAL_ATTEMPTS: u32 = 6;

/// How a single push attempt ended.
pub(super) enum PushResult {
    Pushed,
    Rejected(String),
}

impl Session {
    pub(super) fn remote_url(&self) -> Result<String, GitError> {
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
    pub(super) fn callbacks<'a>(
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
    pub(super) fn transfer_error(
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
    pub(super) fn list_remote(&self) -> Result<(Option<String>, BTreeSet<String>), GitError> {
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
    pub(super) fn fetch(&self) -> Result<Option<Oid>, GitError> {
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
    pub(super) fn push_once(&self) -> Result<PushResult, GitError> {
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
