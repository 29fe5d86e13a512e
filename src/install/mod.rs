//! `snaproll install`: the objects that run snaproll as a CronJob for one rollout.
//!
//! A ServiceAccount, a Role and RoleBinding in the rollout's namespace with exactly the
//! permissions the engine uses on the kinds the spec renders ([`rbac::rules_for`]), a ClusterRole
//! and ClusterRoleBinding only when snaproll manages the VolumeSnapshotClass, a ConfigMap holding
//! the spec, and the CronJob. They are rendered from embedded minijinja templates
//! (`templates/install/`) the same way as the rollout's objects (JSON auto-escaping, strict
//! undefined), parsed into their k8s-openapi types and validated before anything is printed.
//!
//! These objects are kept apart from [`crate::manifest::Kind`]: they are installed once by a
//! person (with `kubectl apply` or `--apply`), not managed by the rollout, and they carry no
//! ownership labels, so prune can never select them.
//! `install --apply` keeps its own small inventory instead ([`inventory`]).

pub mod inventory;
mod objects;
pub mod rbac;

pub use objects::*;

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use crate::spec::{self, Rollout};

/// Templates compiled into the binary, in apply order.
pub const TEMPLATES: [(&str, &str); 7] = [
    (
        "serviceaccount.yaml.j2",
        include_str!("../../templates/install/serviceaccount.yaml.j2"),
    ),
    (
        "configmap.yaml.j2",
        include_str!("../../templates/install/configmap.yaml.j2"),
    ),
    (
        "role.yaml.j2",
        include_str!("../../templates/install/role.yaml.j2"),
    ),
    (
        "rolebinding.yaml.j2",
        include_str!("../../templates/install/rolebinding.yaml.j2"),
    ),
    (
        "clusterrole.yaml.j2",
        include_str!("../../templates/install/clusterrole.yaml.j2"),
    ),
    (
        "clusterrolebinding.yaml.j2",
        include_str!("../../templates/install/clusterrolebinding.yaml.j2"),
    ),
    (
        "cronjob.yaml.j2",
        include_str!("../../templates/install/cronjob.yaml.j2"),
    ),
];

/// Where the spec is mounted in the CronJob's container.
pub const SPEC_DIR: &str = "/etc/snaproll";
/// File name of the spec in [`SPEC_DIR`] (and its key in the ConfigMap).
pub const SPEC_KEY: &str = "snaproll.yaml";
/// Environment variable carrying the Git token (from the Secret's `token` key).
pub const GIT_TOKEN_ENV: &str = "SNAPROLL_GIT_TOKEN";
/// Key of the Git token in the Git Secret.
pub const GIT_TOKEN_KEY: &str = "token";
/// Key of the SSH private key in the Git Secret, for SSH remotes (`kubernetes.io/ssh-auth`).
pub const GIT_SSH_KEY: &str = "ssh-privatekey";
/// Key of the SSH host keys in the Git Secret (`ssh-keyscan` output). libgit2 (1.7 and later)
/// checks the server against `$HOME/.ssh/known_hosts` and refuses an unknown host, so the
/// CronJob mounts this key there.
pub const GIT_KNOWN_HOSTS_KEY: &str = "known_hosts";
/// `$HOME` of the CronJob's container: the writable scratch volume (the root file system is
/// read-only).
const HOME: &str = "/tmp";
/// ConfigMaps hold at most 1 MiB; leave room for the object around the data.
const MAX_SPEC_IN_CONFIGMAP: usize = 1_000_000;
/// Longest CronJob name: the controller appends an 11-character suffix to name its Jobs, whose
/// names (and the `job-name` label) may be at most 63 characters.
pub const MAX_CRONJOB_NAME: usize = 52;
/// How long one run may take before the Job is stopped. Runs are short (each advances the
/// rollout and exits; waiting happens across runs), so an hour only stops a hung one.
const DEADLINE_SECONDS: i64 = 3600;

/// Why the install objects could not be rendered. Nothing is printed or applied when any occurs.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A flag value cannot be used (schedule, image, namespace, secret name).
    #[error("--{flag} `{value}`: {reason}")]
    Option {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// The spec file is too large to fit in a ConfigMap.
    #[error(
        "{file} is {size} bytes; a ConfigMap holds at most {MAX_SPEC_IN_CONFIGMAP}: split the rollout"
    )]
    SpecTooLarge { file: String, size: usize },
    /// `--repo` holds a password or token, which the CronJob's arguments would show to anyone
    /// who can read CronJobs or Pods. The message gives the command that stores it in the
    /// Secret the CronJob reads, and the URL to pass instead; it never holds the secret.
    #[error(
        "--repo holds a credential, which would be written in plain text into the CronJob; store it in the Secret the CronJob reads: `{command}`, then pass --repo {public}"
    )]
    CredentialsInRepo { command: String, public: String },
    /// The rollout name makes an object name too long.
    #[error(
        "{object} name `{name}` is {len} characters, over {max}; shorten the rollout name `{rollout}` to at most {fit} characters"
    )]
    NameTooLong {
        object: &'static str,
        name: String,
        len: usize,
        max: usize,
        rollout: String,
        fit: usize,
    },
    /// An embedded template failed to compile or render (a bug in snaproll).
    #[error("templates/install/{template}: {message}")]
    Template { template: String, message: String },
    /// A rendered object is not valid YAML or failed validation (a bug in snaproll, or a value
    /// that slipped past the checks above).
    #[error("templates/install/{template}: rendered object is invalid: {problem}")]
    Invalid { template: String, problem: String },
}

/// What the user chose on the command line.
#[derive(Clone, Debug)]
pub struct Options {
    /// Cron schedule (five fields or a `@` macro).
    pub schedule: String,
    /// Git repository URL; `None` runs `snaproll apply` without Git.
    pub repo: Option<String>,
    /// Secret holding the Git credentials (key `token`, or `ssh-privatekey` for SSH remotes).
    pub git_secret: String,
    /// snaproll's container image.
    pub image: String,
    /// Namespace of the CronJob, ServiceAccount and ConfigMap; `None`: the rollout's.
    pub namespace: Option<String>,
    /// Pull mode: the CronJob only commits and pushes (Argo CD or Flux applies); read-only RBAC.
    pub pull: bool,
    /// `--snapshot-timeout` for the CronJob's `reconcile` (`None`: its default).
    pub snapshot_timeout: Option<String>,
}

/// The default image: this version of snaproll as the release workflow publishes it.
pub fn default_image() -> String {
    format!("ghcr.io/snaproll/snaproll:{}", env!("CARGO_PKG_VERSION"))
}

/// Renders and validates the install objects for `rollout`, whose spec file reads `spec_text`.
pub fn render(
    rollout: &Rollout,
    file: &str,
    spec_text: &str,
    opts: &Options,
) -> Result<Vec<InstallObject>, InstallError> {
    let ctx = context(rollout, file, spec_text, opts)?;
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    for (name, text) in TEMPLATES {
        env.add_template(name, text)
            .map_err(|e| template_error(name, &e))?;
    }
    let with_cluster_role = !rollout.spec.snapshot_class.existing && !opts.pull;
    let mut objects = Vec::new();
    for (name, _) in TEMPLATES {
        if name.starts_with("cluster") && !with_cluster_role {
            continue;
        }
        let text = env
            .get_template(name)
            .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
            .map_err(|e| template_error(name, &e))?;
        let invalid = |problem: String| InstallError::Invalid {
            template: name.to_string(),
            problem,
        };
        let value: Value = serde_saphyr::from_str(&text)
            .map_err(|e| invalid(e.to_string().lines().next().unwrap_or("").to_string()))?;
        let (kind, namespace, obj_name) = validate(&value).map_err(invalid)?;
        objects.push(InstallObject {
            kind,
            namespace,
            name: obj_name,
            yaml: crate::yaml::to_string(&value),
            value,
        });
    }
    Ok(objects)
}

fn template_error(name: &str, e: &minijinja::Error) -> InstallError {
    let mut message = e.kind().to_string();
    if let Some(d) = e.detail() {
        message = format!("{message}: {d}");
    }
    if let Some(l) = e.line() {
        message = format!("line {l}: {message}");
    }
    InstallError::Template {
        template: name.to_string(),
        message,
    }
}

/// What the install templates see.
fn context(
    rollout: &Rollout,
    file: &str,
    spec_text: &str,
    opts: &Options,
) -> Result<Value, InstallError> {
    check_options(opts)?;
    if spec_text.len() > MAX_SPEC_IN_CONFIGMAP {
        return Err(InstallError::SpecTooLarge {
            file: file.to_string(),
            size: spec_text.len(),
        });
    }
    let rollout_name = &rollout.metadata.name;
    let rollout_ns = &rollout.metadata.namespace;
    let namespace = opts.namespace.clone().unwrap_or_else(|| rollout_ns.clone());
    if let Some(repo) = &opts.repo {
        check_no_credentials(repo, &namespace, &opts.git_secret)?;
    }
    let base = format!("snaproll-{rollout_name}");
    let fit = |max: usize, prefix: usize| max.saturating_sub(prefix);
    if base.len() > MAX_CRONJOB_NAME {
        return Err(InstallError::NameTooLong {
            object: "CronJob",
            len: base.len(),
            name: base.clone(),
            max: MAX_CRONJOB_NAME,
            rollout: rollout_name.clone(),
            fit: fit(MAX_CRONJOB_NAME, "snaproll-".len()),
        });
    }
    let config_map = format!("{base}-spec");
    // Cluster-wide names must not collide between rollouts of the same name in two namespaces.
    let cluster_role = format!("snaproll-{rollout_ns}-{rollout_name}");
    if cluster_role.len() > 253 {
        return Err(InstallError::NameTooLong {
            object: "ClusterRole",
            len: cluster_role.len(),
            name: cluster_role,
            max: 253,
            rollout: rollout_name.clone(),
            fit: fit(253, "snaproll--".len() + rollout_ns.len()),
        });
    }
    let spec_path = format!("{SPEC_DIR}/{SPEC_KEY}");
    let mut env = vec![
        json!({"name": "SNAPROLL_LOG_FORMAT", "value": "json"}),
        json!({"name": "SNAPROLL_LOG", "value": "info"}),
        // libgit2 and the Git transports look for configuration under $HOME; the root file
        // system is read-only, so point it at the writable scratch volume.
        json!({"name": "HOME", "value": HOME}),
    ];
    let mut mounts = vec![
        json!({"name": "spec", "mountPath": SPEC_DIR, "readOnly": true}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    let mut volumes = vec![
        json!({"name": "spec", "configMap": {"name": config_map}}),
        json!({"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}),
    ];
    // `-o json`: the run's report (change set, rollout states) on stdout is JSON too, like
    // the logs on stderr, for log collectors.
    // Without Git the CronJob runs the same engine in push mode: one step per run, gated
    // (a snapshot only after its producer succeeded, a StatefulSet only after its snapshot
    // is ready), under the rollout's Lease.
    let mut args: Vec<String> = match &opts.repo {
        None => {
            let mut args: Vec<String> = ["reconcile", "-f", &spec_path, "--apply", "--prune"]
                .map(str::to_string)
                .to_vec();
            if let Some(t) = &opts.snapshot_timeout {
                args.extend(["--snapshot-timeout".to_string(), t.clone()]);
            }
            args
        }
        Some(repo) => {
            let mut args: Vec<String> = ["reconcile", "-f", &spec_path, "--repo", repo, "--push"]
                .map(str::to_string)
                .to_vec();
            if !opts.pull {
                args.extend(["--apply", "--prune"].map(str::to_string));
            }
            if let Some(t) = &opts.snapshot_timeout {
                args.extend(["--snapshot-timeout".to_string(), t.clone()]);
            }
            if crate::gitops::is_ssh_url(repo) {
                let dir = "/etc/snaproll-git";
                mounts.push(json!({"name": "git", "mountPath": dir, "readOnly": true}));
                volumes.push(json!({"name": "git", "secret": {
                    "secretName": opts.git_secret,
                    "defaultMode": 0o400,
                    "items": [
                        {"key": GIT_SSH_KEY, "path": GIT_SSH_KEY},
                        {"key": GIT_KNOWN_HOSTS_KEY, "path": GIT_KNOWN_HOSTS_KEY},
                    ],
                }}));
                // One file over the scratch volume, where libgit2 looks for host keys.
                mounts.push(json!({
                    "name": "git",
                    "mountPath": format!("{HOME}/.ssh/{GIT_KNOWN_HOSTS_KEY}"),
                    "subPath": GIT_KNOWN_HOSTS_KEY,
                    "readOnly": true,
                }));
                args.push("--ssh-key".to_string());
                args.push(format!("{dir}/{GIT_SSH_KEY}"));
            } else {
                env.push(
                    json!({"name": GIT_TOKEN_ENV, "valueFrom": {"secretKeyRef": {
                        "name": opts.git_secret, "key": GIT_TOKEN_KEY,
                    }}}),
                );
                // Hosts that want a real user name with the token (GitLab, Bitbucket) get it
                // from the same Secret; without that key, Git sends `x-access-token`.
                env.push(
                    json!({"name": "SNAPROLL_GIT_USERNAME", "valueFrom": {"secretKeyRef": {
                        "name": opts.git_secret, "key": "username", "optional": true,
                    }}}),
                );
            }
            args
        }
    };
    args.extend(["-o", "json"].map(str::to_string));
    let (namespaced, cluster) = rbac::rules_for(rollout, opts.pull);
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name", "snaproll"),
        ("app.kubernetes.io/instance", rollout_name.as_str()),
        ("app.kubernetes.io/component", "cronjob"),
        ("app.kubernetes.io/part-of", "snaproll"),
    ]);
    Ok(json!({
        "rollout": {"name": rollout_name, "namespace": rollout_ns},
        "install": {
            "namespace": namespace,
            "image": opts.image,
            "schedule": opts.schedule,
            "args": args,
            "env": env,
            "volumeMounts": mounts,
            "volumes": volumes,
            "specKey": SPEC_KEY,
            "specText": spec_text,
            "deadlineSeconds": DEADLINE_SECONDS,
        },
        "names": {
            "serviceAccount": base,
            "role": base,
            "cronJob": base,
            "configMap": config_map,
            "clusterRole": cluster_role,
        },
        "labels": labels,
        "rules": {
            "namespaced": serde_json::to_value(&namespaced).expect("rules serialise"),
            "cluster": serde_json::to_value(&cluster).expect("rules serialise"),
        },
    }))
}

/// Refuses a `--repo` URL with a password or token in it (see
/// [`InstallError::CredentialsInRepo`]).
fn check_no_credentials(repo: &str, namespace: &str, secret: &str) -> Result<(), InstallError> {
    if !crate::gitops::has_credentials(repo) {
        return Ok(());
    }
    let public = crate::gitops::redact_url(repo);
    let create = format!("kubectl -n {namespace} create secret generic {secret}");
    let command = if crate::gitops::is_ssh_url(repo) || crate::gitops::is_ssh_url(&public) {
        let host = crate::gitops::ssh_host(&public).unwrap_or("<git host>");
        format!(
            "{create} --from-file={GIT_SSH_KEY}=<key file> --from-file={GIT_KNOWN_HOSTS_KEY}=<(ssh-keyscan {host})"
        )
    } else {
        // The user name, when the URL gives one next to a password, is not a secret.
        let user = repo
            .split_once("://")
            .map_or(repo, |(_, rest)| rest)
            .split_once(':')
            .map(|(u, _)| u)
            .filter(|u| !u.is_empty() && !u.contains(['@', '/']));
        match user {
            Some(u) => format!(
                "{create} --from-literal=username={u} --from-literal={GIT_TOKEN_KEY}=<the password from --repo>"
            ),
            None => {
                format!("{create} --from-literal={GIT_TOKEN_KEY}=<the token from --repo>")
            }
        }
    };
    Err(InstallError::CredentialsInRepo { command, public })
}

fn check_options(opts: &Options) -> Result<(), InstallError> {
    let bad = |flag: &'static str, value: &str, reason: String| InstallError::Option {
        flag,
        value: value.to_string(),
        reason,
    };
    check_schedule(&opts.schedule).map_err(|r| bad("schedule", &opts.schedule, r))?;
    if opts.image.is_empty()
        || opts
            .image
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            "image",
            &opts.image,
            "an image reference has no spaces, e.g. ghcr.io/snaproll/snaproll:0.1.0".into(),
        ));
    }
    if let Some(ns) = &opts.namespace {
        spec::check_dns_label(ns).map_err(|r| bad("namespace", ns, r))?;
    }
    spec::check_dns_subdomain(&opts.git_secret)
        .map_err(|r| bad("git-secret", &opts.git_secret, r))?;
    if opts.pull && opts.repo.is_none() {
        return Err(bad(
            "pull",
            "true",
            "pull mode needs --repo: the CronJob's only output is the Git commit".into(),
        ));
    }
    if let Some(t) = &opts.snapshot_timeout {
        if opts.repo.is_none() {
            return Err(bad(
                "snapshot-timeout",
                t,
                "only `reconcile` (--repo) waits for snapshots; `apply` has no timeout".into(),
            ));
        }
        check_duration(t).map_err(|r| bad("snapshot-timeout", t, r))?;
    }
    if let Some(repo) = &opts.repo
        && (repo.is_empty() || repo.chars().any(char::is_whitespace))
    {
        return Err(bad(
            "repo",
            repo,
            "a Git URL has no spaces, e.g. https://git.example.com/ops.git".into(),
        ));
    }
    Ok(())
}

/// A positive duration in a form `--snapshot-timeout` parses (`12h`, `90m`, `PT12H`).
pub fn check_duration(s: &str) -> Result<(), String> {
    match s.parse::<jiff::SignedDuration>() {
        Ok(d) if d.is_positive() => Ok(()),
        Ok(_) => Err("must be longer than zero".into()),
        Err(_) => Err("a duration such as 12h, 90m or 1h30m".into()),
    }
}

/// Accepts the forms the CronJob controller does: five fields or a `@` macro. Field contents are
/// checked for their characters only; the controller reports anything subtler.
pub fn check_schedule(s: &str) -> Result<(), String> {
    const MACROS: [&str; 8] = [
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "@every",
    ];
    if let Some(m) = s.strip_prefix('@') {
        let word = m.split_whitespace().next().unwrap_or("");
        return if MACROS.contains(&format!("@{word}").as_str()) {
            Ok(())
        } else {
            Err(format!("unknown macro; use one of {}", MACROS.join(", ")))
        };
    }
    if s.contains("TZ=") {
        return Err(
            "time zones in the schedule are not supported; the CronJob runs in UTC (timeZone: Etc/UTC)"
                .into(),
        );
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "a schedule has 5 fields (minute hour day-of-month month day-of-week), this has {}; e.g. \"*/15 * * * *\"",
            fields.len()
        ));
    }
    for f in fields {
        if !f
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-' | '?'))
        {
            return Err(format!(
                "field `{f}` may only hold digits, names, `*`, `/`, `,`, `-` and `?`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        for ok in [
            "*/15 * * * *",
            "0 3 * * 1-5",
            "@hourly",
            "@every 1h",
            "5 4 * jan,feb ?",
        ] {
            assert!(check_schedule(ok).is_ok(), "{ok}");
        }
        let e = check_schedule("* * * *").unwrap_err();
        assert!(e.contains("5 fields"), "{e}");
        assert!(check_schedule("@sometimes").is_err());
        assert!(check_schedule("CRON_TZ=UTC 0 * * * *").is_err());
        assert!(check_schedule("0 * * * $(rm)").is_err());
    }

    #[test]
    fn durations() {
        for ok in ["12h", "90m", "1h30m", "PT12H"] {
            assert_eq!(check_duration(ok), Ok(()), "{ok}");
        }
        assert!(check_duration("0s").is_err());
        assert!(check_duration("soon").is_err());
    }
}
