//! The cluster connection: kubeconfig (or in-cluster) configuration and the client.

use super::{Cluster, ClusterAccess, ClusterWrite, EngineError, Options};
use crate::apply::{ApplyError, Manager};
use crate::spec::Loaded;

/// Connects to the cluster. Without any configuration (no kubeconfig, not in a cluster) a run
/// that may decide from Git runs offline; anything else that fails is an error, never a silent
/// fallback.
pub(crate) fn connect(opts: &Options, loaded: &Loaded) -> Result<Option<Cluster>, EngineError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(EngineError::Runtime)?;
    let may_go_offline = !opts.cluster.explicit()
        && !opts.cluster_required
        && opts.write == ClusterWrite::None
        && opts.git.is_some();
    match runtime.block_on(client(&opts.cluster)) {
        Ok(client) => {
            let meta = &loaded.rollout.metadata;
            let manager = Manager::new(client, &meta.name, &meta.namespace);
            Ok(Some(Cluster { runtime, manager }))
        }
        Err(e) if may_go_offline && matches!(e, ApplyError::Config { .. }) => {
            tracing::debug!(error = %e, "no cluster configuration");
            tracing::info!(
                "no kubeconfig or in-cluster configuration found: deciding from Git (offline mode)"
            );
            Ok(None)
        }
        Err(source) => Err(EngineError::Connect {
            source: Box::new(source),
            hint: if opts.git.is_some() && opts.write == ClusterWrite::None {
                " (--offline decides from Git without one)"
            } else {
                ""
            },
        }),
    }
}

/// The User-Agent of every request snaproll makes.
pub const USER_AGENT: &str = concat!("snaproll/", env!("CARGO_PKG_VERSION"));

/// A client from `--kubeconfig` (a file or a `KUBECONFIG`-style list) and `--context`, else
/// `kube::Config::infer` (default kubeconfig, then the in-cluster service account).
pub async fn client(args: &ClusterAccess) -> Result<kube::Client, ApplyError> {
    use kube::config::{Config, KubeConfigOptions};
    let cfg_err = |e: &dyn std::error::Error| ApplyError::Config { message: chain(e) };
    let opts = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    // Pick ring explicitly: with two providers compiled in, rustls would refuse to choose.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = match &args.kubeconfig {
        Some(paths) => {
            let files: Vec<std::path::PathBuf> = std::env::split_paths(paths)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            if files.is_empty() {
                return Err(ApplyError::Config {
                    message: "--kubeconfig is empty".to_string(),
                });
            }
            kubeconfig_config(&files, &opts).await?
        }
        None => {
            // What kubectl reads without KUBECONFIG: ~/.kube/config, else the in-cluster account.
            let home = std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(".kube").join("config"));
            match home.filter(|p| p.exists()) {
                Some(file) => kubeconfig_config(&[file], &opts).await?,
                None => {
                    let looked = home_config_text();
                    if let Some(ctx) = &args.context {
                        return Err(ApplyError::Config {
                            message: format!(
                                "context \"{ctx}\" not found: no kubeconfig (KUBECONFIG is not set and {looked} does not exist)"
                            ),
                        });
                    }
                    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
                        return Err(ApplyError::Config {
                            message: format!(
                                "no cluster configuration: KUBECONFIG is not set, {looked} does not exist, and this is not a Pod in a cluster (KUBERNETES_SERVICE_HOST is not set)"
                            ),
                        });
                    }
                    Config::incluster().map_err(|e| ApplyError::Config {
                        message: format!("in-cluster configuration: {}", chain(&e)),
                    })?
                }
            }
        }
    };
    // kube retries 429/503/504 inside each request by default; snaproll's own retry
    // (`apply::RetryPolicy`) is the one budget, so the inner one would multiply it.
    config.default_retry = false;
    // Audit logs tell snaproll's requests apart by their User-Agent.
    config
        .headers
        .retain(|(name, _)| name != http::header::USER_AGENT);
    config.headers.push((
        http::header::USER_AGENT,
        http::header::HeaderValue::from_static(USER_AGENT),
    ));
    Ok(kube::client::ClientBuilder::try_from(config)
        .map_err(|e| cfg_err(&e))?
        .with_layer(&crate::apply::retry_after::RetryAfterLayer)
        .build())
}

/// `~/.kube/config` as the user knows it, for messages.
fn home_config_text() -> String {
    match std::env::var_os("HOME") {
        Some(h) => std::path::Path::new(&h)
            .join(".kube")
            .join("config")
            .display()
            .to_string(),
        None => "~/.kube/config".to_string(),
    }
}

/// A config from kubeconfig files (merged as kubectl does), with kubectl's wording when a file
/// cannot be read or the context is not in them.
async fn kubeconfig_config(
    files: &[std::path::PathBuf],
    opts: &kube::config::KubeConfigOptions,
) -> Result<kube::Config, ApplyError> {
    use kube::config::{Config, Kubeconfig};
    let mut merged: Option<Kubeconfig> = None;
    for p in files {
        let kc = Kubeconfig::read_from(p).map_err(|e| {
            // The innermost cause (the I/O or YAML error) without kube's quoted path.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            ApplyError::Config {
                message: format!("cannot read kubeconfig {}: {cause}", p.display()),
            }
        })?;
        merged = Some(match merged {
            None => kc,
            Some(m) => m
                .merge(kc)
                .map_err(|e| ApplyError::Config { message: chain(&e) })?,
        });
    }
    let kc = merged.expect("at least one file");
    let names = || {
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let wanted = opts.context.clone().or_else(|| kc.current_context.clone());
    match wanted {
        Some(ctx) if !kc.contexts.iter().any(|c| c.name == ctx) => {
            let known: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
            let which = if opts.context.is_some() {
                ""
            } else {
                "current "
            };
            return Err(ApplyError::Config {
                message: format!(
                    "{which}context \"{ctx}\" not found in {}; known contexts: {}",
                    names(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
        None => {
            return Err(ApplyError::Config {
                message: format!(
                    "no current context in {}; pass --context (known contexts: {})",
                    names(),
                    kc.contexts
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Some(_) => {}
    }
    Config::from_custom_kubeconfig(kc, opts)
        .await
        .map_err(|e| ApplyError::Config {
            message: format!("kubeconfig {}: {}", names(), chain(&e)),
        })
}

pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s = format!("{s}: {t}");
        }
        src = c.source();
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
