//! Credentials out of URLs and out of whatever libgit2 says.

use super::{Destination, Libgit2};

/// What `--repo` names. The one classifier of remotes in the program: the engine, the Git
/// layer and `install` (which mounts an SSH key or a token) all ask here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteKind {
    /// A local path (a working or bare repository, or where one is created).
    Path,
    /// SSH: `ssh://…` (also `git+ssh://`, `ssh+git://`) or scp-like `user@host:path`.
    Ssh,
    /// Any other URL (`https://`, `http://`, `git://`, `file://`).
    Url,
}

/// Classifies `repo` as Git reads it: a `scheme://` is a URL; text with a `:` before its
/// first `/` and an `@` is scp-like SSH (Git reads it so even when a password holds a `/`,
/// `bot:pa/ss@host:org/x`, so it is never a path to print); anything else is a path.
pub fn remote_kind(repo: &str) -> RemoteKind {
    if let Some((scheme, _)) = repo.split_once("://") {
        return match scheme.to_ascii_lowercase().as_str() {
            "ssh" | "git+ssh" | "ssh+git" => RemoteKind::Ssh,
            _ => RemoteKind::Url,
        };
    }
    let head = repo.split('/').next().unwrap_or_default();
    if head.contains(':') && repo.contains('@') {
        return RemoteKind::Ssh;
    }
    RemoteKind::Path
}

/// Whether `repo` is a remote URL rather than a local path.
pub fn is_url(repo: &str) -> bool {
    remote_kind(repo) != RemoteKind::Path
}

/// Whether `repo` is an SSH remote (authenticates with a key, not a token).
pub fn is_ssh_url(repo: &str) -> bool {
    remote_kind(repo) == RemoteKind::Ssh
}

/// The host of an SSH remote (`git@github.com:o/r.git` or `ssh://git@host:22/r.git`), for
/// the `ssh-keyscan` hint; `None` for other remotes.
pub fn ssh_host(url: &str) -> Option<&str> {
    if !is_ssh_url(url) {
        return None;
    }
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let after_user = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let end = after_user.find([':', '/']).unwrap_or(after_user.len());
    let host = &after_user[..end];
    (!host.is_empty()).then_some(host)
}

/// A URL's credentials split off: what may be shown and stored, and the secret part.
pub(super) struct UrlCredentials {
    /// The URL without the secret: shown in messages and stored as the clone's remote URL.
    pub(super) public: String,
    /// User and password taken out of the URL (percent-decoded, as Git reads them), supplied
    /// through the credentials callback.
    pub(super) cred: Option<(String, String)>,
    /// The secret as written in the URL (the password, or a token given as the user name).
    pub(super) raw_secret: Option<String>,
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
pub(super) fn split_credentials(url: &str) -> UrlCredentials {
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

/// Removes credentials from text libgit2 produced.
#[derive(Clone, Default)]
pub(super) struct Scrubber {
    pub(super) secrets: Vec<(String, String)>,
}

impl Scrubber {
    /// Replaces the URL as given by its public form, then the secrets themselves (the URL's
    /// password or token, the env token) wherever libgit2 might echo them. User names and
    /// host names are not secrets and stay as they are.
    pub(super) fn new(dest: &Destination) -> Scrubber {
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

    pub(super) fn text(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (secret, with) in &self.secrets {
            if !secret.is_empty() {
                s = s.replace(secret.as_str(), with);
            }
        }
        s
    }

    pub(super) fn err(&self, e: git2::Error) -> Libgit2 {
        Libgit2 {
            code: e.code(),
            class: e.class(),
            message: self.text(e.message()),
        }
    }
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
    fn ssh_remotes_and_their_hosts() {
        assert!(is_ssh_url("git@github.com:o/r.git"));
        assert!(is_ssh_url("ssh://git@host/r.git"));
        assert!(is_ssh_url("bot:pa/ss@host:org/x"));
        assert!(!is_ssh_url("https://user@host/r.git"));
        assert!(!is_ssh_url("https://host:8443/r.git"));
        assert!(!is_ssh_url("/srv/repo"));
        assert_eq!(ssh_host("git@github.com:o/r.git"), Some("github.com"));
        assert_eq!(
            ssh_host("ssh://git@host.example:2222/r.git"),
            Some("host.example")
        );
        assert_eq!(ssh_host("https://host/x"), None);
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
}
