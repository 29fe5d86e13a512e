//! `diff`, `apply` and `status`: the commands that talk to the cluster.

use anyhow::Result;

use crate::cli::{ApplyCmd, DiffCmd, StatusCmd};

pub fn diff(_cmd: &DiffCmd, _color: bool) -> Result<u8> {
    anyhow::bail!("diff is not implemented yet")
}

pub fn apply(_cmd: &ApplyCmd, _color: bool) -> Result<u8> {
    anyhow::bail!("apply is not implemented yet")
}

pub fn status(_cmd: &StatusCmd, _color: bool) -> Result<u8> {
    anyhow::bail!("status is not implemented yet")
}
