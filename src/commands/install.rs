//! `install`: render (and, later, apply) what runs snaproll as a CronJob for one rollout.

use std::io::Write;

use anyhow::{Context, Result};

use super::UsageError;
use crate::cli::InstallCmd;
use crate::exit;
use crate::install::{self, Options};
use crate::spec;

pub fn install(cmd: &InstallCmd) -> Result<u8> {
    if cmd.apply {
        // Checked first so that nothing is rendered or written for a run that cannot finish.
        return Err(UsageError(
            "install --apply needs the apply engine to handle install objects (ServiceAccount, RBAC, ConfigMap, CronJob), which it does not yet; pipe the output to `kubectl apply --server-side -f -` instead".to_string(),
        )
        .into());
    }
    let loaded = spec::load(&cmd.file)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let text = std::fs::read_to_string(&cmd.file)
        .with_context(|| format!("reading {}", cmd.file.display()))?;
    let opts = Options {
        schedule: cmd.schedule.clone(),
        repo: cmd.repo.clone(),
        git_secret: cmd.git_secret.clone(),
        image: cmd.image.clone().unwrap_or_else(install::default_image),
        namespace: cmd.namespace.clone(),
        pull: cmd.pull,
    };
    let objects = install::render(&loaded.rollout, &loaded.file, &text, &opts)?;
    match &cmd.out {
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
            eprintln!("wrote {} objects to {}", objects.len(), dir.display());
        }
    }
    if let Some(repo) = &opts.repo {
        let ns = opts
            .namespace
            .as_deref()
            .unwrap_or(&loaded.rollout.metadata.namespace);
        let secret = &opts.git_secret;
        if install::is_ssh_url(repo) {
            eprintln!(
                "note: the CronJob reads the SSH key from Secret {ns}/{secret} (key `{}`); create it with: kubectl -n {ns} create secret generic {secret} --from-file={}=<key file>",
                install::GIT_SSH_KEY,
                install::GIT_SSH_KEY
            );
        } else {
            eprintln!(
                "note: the CronJob reads the Git token from Secret {ns}/{secret} (key `{}`); create it with: kubectl -n {ns} create secret generic {secret} --from-literal={}=<token>",
                install::GIT_TOKEN_KEY,
                install::GIT_TOKEN_KEY
            );
        }
    }
    Ok(exit::OK)
}
