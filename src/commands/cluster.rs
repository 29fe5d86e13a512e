//! `diff`, `apply` and `status`: the commands that talk to the cluster.

use std::io::Write;

use anyhow::Result;

use crate::apply::{ApplyError, ApplyOptions, ChangeSet, DiffOptions, Failed, Manager};
use crate::cli::{ApplyCmd, ApplyFlags, ClusterArgs, DiffCmd, OutputFormat, StatusCmd};
use crate::exit;
use crate::render::RenderedSet;
use crate::spec::Loaded;

pub fn diff(cmd: &DiffCmd, color: bool) -> Result<u8> {
    // Render and validate everything before touching the cluster.
    let (loaded, _generation, set) = super::load_and_render(&cmd.render, false)?;
    let opts = DiffOptions {
        prune: cmd.prune,
        force_conflicts: false,
        color: color && cmd.output == OutputFormat::Text,
    };
    runtime()?.block_on(async {
        let mgr = manager(&cmd.cluster, &loaded).await?;
        let result = mgr.diff(&set, &opts).await;
        let code = report(&result, cmd.output, true)?;
        result.map_err(|f| anyhow::Error::new(*f))?;
        Ok(code)
    })
}

pub fn apply(cmd: &ApplyCmd, _color: bool) -> Result<u8> {
    let (loaded, _generation, set) = super::load_and_render(&cmd.render, false)?;
    run_apply(
        &cmd.cluster,
        &cmd.apply,
        cmd.dry_run,
        cmd.output,
        &loaded,
        &set,
    )
}

fn run_apply(
    cluster: &ClusterArgs,
    flags: &ApplyFlags,
    dry_run: bool,
    output: OutputFormat,
    loaded: &Loaded,
    set: &RenderedSet,
) -> Result<u8> {
    let opts = ApplyOptions {
        prune: flags.prune,
        force_conflicts: flags.force_conflicts,
        dry_run,
        ..ApplyOptions::default()
    };
    runtime()?.block_on(async {
        let mgr = manager(cluster, loaded).await?;
        let result = mgr.apply(set, &opts).await;
        report(&result, output, false)?;
        result.map_err(|f| anyhow::Error::new(*f))?;
        Ok(exit::OK)
    })
}

pub fn status(cmd: &StatusCmd, _color: bool) -> Result<u8> {
    super::lifecycle::status(cmd)
}

/// Prints the change set of `reconcile --apply` (exit code 0: a reconcile that applied
/// changes succeeded). `reconcile --apply` runs the same engine through
/// `lifecycle::apply` (`Manager::apply_from` on the live state the rollout already read), so
/// it has no entry point here.
pub(crate) fn report_apply(
    result: &Result<ChangeSet, Box<Failed>>,
    output: OutputFormat,
) -> Result<u8> {
    report(result, output, false).map(|_| exit::OK)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

async fn manager(args: &ClusterArgs, loaded: &Loaded) -> Result<Manager, ApplyError> {
    let client = client(args).await?;
    let meta = &loaded.rollout.metadata;
    Ok(Manager::new(client, &meta.name, &meta.namespace))
}

/// A client from `--kubeconfig` (a file or a `KUBECONFIG`-style list) and `--context`, else
/// `kube::Config::infer` (default kubeconfig, then the in-cluster service account).
pub async fn client(args: &ClusterArgs) -> Result<kube::Client, ApplyError> {
    use kube::config::{Config, KubeConfigOptions, Kubeconfig};
    let cfg_err = |e: &dyn std::error::Error| ApplyError::Config { message: chain(e) };
    let opts = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    // Pick ring explicitly: with two providers compiled in, rustls would refuse to choose.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match &args.kubeconfig {
        Some(paths) => {
            let mut merged: Option<Kubeconfig> = None;
            for p in std::env::split_paths(paths) {
                if p.as_os_str().is_empty() {
                    continue;
                }
                let kc = Kubeconfig::read_from(&p).map_err(|e| cfg_err(&e))?;
                merged = Some(match merged {
                    None => kc,
                    Some(m) => m.merge(kc).map_err(|e| cfg_err(&e))?,
                });
            }
            let kc = merged.ok_or_else(|| ApplyError::Config {
                message: "--kubeconfig is empty".to_string(),
            })?;
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| cfg_err(&e))?
        }
        None if args.context.is_some() => Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| cfg_err(&e))?,
        None => Config::infer().await.map_err(|e| cfg_err(&e))?,
    };
    kube::Client::try_from(with_user_agent(config)).map_err(|e| cfg_err(&e))
}

/// The User-Agent every API request carries, so audit logs tell snaproll's requests apart.
pub const USER_AGENT: &str = concat!("snaproll/", env!("CARGO_PKG_VERSION"));

/// Adds `User-Agent: snaproll/<version>` to the config's extra headers (kube sends none of
/// its own); any User-Agent the kubeconfig set is replaced.
fn with_user_agent(mut config: kube::Config) -> kube::Config {
    use http::header::{HeaderValue, USER_AGENT as NAME};
    config.headers.retain(|(name, _)| name != NAME);
    config
        .headers
        .push((NAME, HeaderValue::from_static(USER_AGENT)));
    config
}

fn chain(e: &dyn std::error::Error) -> String {
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

/// Prints a change set (also the partial one of a failed run) and returns diff's exit code.
fn report(
    result: &Result<ChangeSet, Box<Failed>>,
    output: OutputFormat,
    diffs: bool,
) -> Result<u8> {
    let changes = match result {
        Ok(c) => c,
        Err(f) => &f.changes,
    };
    let write = || -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        match output {
            OutputFormat::Json => {
                serde_json::to_writer_pretty(&mut out, changes)?;
                writeln!(out)?;
            }
            OutputFormat::Text => {
                if diffs {
                    for c in &changes.changes {
                        if let Some(d) = &c.diff {
                            out.write_all(d.as_bytes())?;
                        }
                    }
                }
                out.write_all(changes.to_text().as_bytes())?;
            }
        }
        out.flush()
    };
    match write() {
        // A failed run reports its own failure (and exit code), even when stdout is closed.
        Err(_) if result.is_err() => {}
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    Ok(if changes.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    })
}
