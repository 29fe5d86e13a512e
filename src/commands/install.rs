//! `install`: render (or apply) what runs snaproll as a CronJob for one rollout.

use std::io::Write;

use anyhow::{Context, Result};

use crate::apply::{ApplyOptions, Manager};
use crate::cli::InstallCmd;
use crate::exit;
use crate::gitops;
use crate::install::{self, InstallObject, Options};
use crate::spec::{self, Loaded};

pub fn install(cmd: &InstallCmd) -> Result<u8> {
    // Read once: the spec may come from standard input (`-f -`), and the ConfigMap must embed
    // exactly the text that was validated.
    let bytes = spec::read(&cmd.spec.file)?;
    let loaded = spec::parse_bytes(&crate::input::display_name(&cmd.spec.file), &bytes)?;
    for w in &loaded.warnings {
        super::warn(&w.to_string());
    }
    let text = String::from_utf8(bytes).context("the spec is not UTF-8")?;
    let opts = Options {
        schedule: cmd.schedule.clone(),
        repo: cmd.repo.clone(),
        git_secret: cmd.git_secret.clone(),
        image: cmd.image.clone().unwrap_or_else(install::default_image),
        namespace: cmd.namespace.clone(),
        pull: cmd.pull,
        snapshot_timeout: cmd.snapshot_timeout.clone(),
    };
    let objects = install::render(&loaded.rollout, &loaded.file, &text, &opts)?;
    match &cmd.out {
        None if cmd.apply => apply(cmd, &loaded, &objects)?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(install::to_yaml_stream(&objects).as_bytes())
                .and_then(|_| out.flush())
                .context("writing to stdout")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for o in &objects {
                let path = dir.join(o.file_name());
                std::fs::write(&path, &o.yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            super::note(&format!(
                "wrote {} objects to {}",
                objects.len(),
                dir.display()
            ));
        }
    }
    if let Some(repo) = &opts.repo {
        let ns = opts
            .namespace
            .as_deref()
            .unwrap_or(&loaded.rollout.metadata.namespace);
        let secret = &opts.git_secret;
        if gitops::is_ssh_url(repo) {
            let host = gitops::ssh_host(repo).unwrap_or("<git host>");
            super::note(&format!(
                "note: the CronJob reads the SSH key and the host keys from Secret {ns}/{secret} (keys `{key}` and `{hosts}`); create it with: kubectl -n {ns} create secret generic {secret} --from-file={key}=<key file> --from-file={hosts}=<(ssh-keyscan {host})",
                key = install::GIT_SSH_KEY,
                hosts = install::GIT_KNOWN_HOSTS_KEY,
            ));
        } else {
            super::note(&format!(
                "note: the CronJob reads the Git token from Secret {ns}/{secret} (key `{}`); create it with: kubectl -n {ns} create secret generic {secret} --from-literal={}=<token>",
                install::GIT_TOKEN_KEY,
                install::GIT_TOKEN_KEY
            ));
        }
    }
    Ok(exit::OK)
}

/// `install --apply`: the apply engine's by-name path (server-side apply as `snaproll`, a
/// dry-run of every change before the first write, no write for an unchanged object), in the
/// order the objects were rendered (ServiceAccount, ConfigMap, Role, RoleBinding, ClusterRole,
/// ClusterRoleBinding, CronJob). Then, after every apply succeeded, the objects the previous
/// `install --apply` recorded in its inventory and this one no longer renders are deleted
/// (see [`install::inventory`]). Prints the change set; a failed run prints what it did.
fn apply(cmd: &InstallCmd, loaded: &Loaded, objects: &[InstallObject]) -> Result<()> {
    let objects = &install::inventory::recorded(objects);
    let named: Vec<_> = objects.iter().map(InstallObject::to_named).collect();
    let opts = ApplyOptions {
        dry_run: cmd.dry_run.is_on(),
        force_conflicts: cmd.force_conflicts,
        ..ApplyOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let access = crate::engine::ClusterAccess {
            kubeconfig: cmd.cluster.kubeconfig.clone(),
            context: cmd.cluster.context.clone(),
        };
        let client = crate::engine::client(&access).await?;
        let meta = &loaded.rollout.metadata;
        let previous = install::inventory::previous(&client, objects).await?;
        let mgr = Manager::new(client.clone(), &meta.name, &meta.namespace);
        let mut result = mgr.apply_named(&named, &opts).await;
        if let Ok(changes) = &mut result {
            let pruned =
                install::inventory::prune(&client, &previous, objects, &meta.name, opts.dry_run)
                    .await;
            let (done, error) = match pruned {
                Ok(done) => (done, None),
                Err((done, e)) => (done, Some(e)),
            };
            for c in done {
                changes.push(c);
            }
            if let Some(error) = error {
                let mut changes = std::mem::take(changes);
                changes.error = Some(error.to_string());
                result = Err(Box::new(crate::apply::Failed { changes, error }));
            }
        }
        let changes = match &result {
            Ok(c) => c,
            Err(f) => &f.changes,
        };
        let mut out = std::io::stdout().lock();
        out.write_all(changes.to_text().as_bytes())
            .and_then(|_| out.flush())
            .context("writing to stdout")?;
        result.map_err(|f| anyhow::Error::new(*f))?;
        Ok(())
    })
}
