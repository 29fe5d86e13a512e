//! `reconcile`: render, commit to Git (and push), then optionally apply.

use anyhow::Result;

use crate::cli::ReconcileCmd;

pub fn reconcile(_cmd: &ReconcileCmd, _color: bool) -> Result<u8> {
    anyhow::bail!("reconcile is not implemented yet")
}
