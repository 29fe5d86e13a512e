//! snaproll: dataset rollouts on Kubernetes with volume snapshots.
//!
//! The library holds everything the `snaproll` binary does, so the integration tests can drive
//! each layer directly: [`spec`] (the rollout spec), [`render`] (templates to validated objects),
//! [`manifest`] (identity, labels, order), [`schema`] (validation of rendered objects) and
//! [`commands`] (what each CLI command does).

pub mod apply;
pub mod cli;
pub mod commands;
pub mod engine;
pub mod events;
pub mod gitops;
pub mod input;
pub mod install;
pub mod manifest;
pub mod render;
pub mod rollout;
pub mod schema;
pub mod spec;
pub mod yaml;

/// Process exit codes (documented in the README and `--help`).
pub mod exit {
    /// Success; `diff` found no changes.
    pub const OK: u8 = 0;
    /// `diff` found changes; `status` found a failed generation.
    pub const CHANGES: u8 = 1;
    /// Invalid input: spec, flags, templates or rendered objects. Nothing was written.
    pub const INVALID: u8 = 2;
    /// Git failure: repository, commit or push.
    pub const GIT: u8 = 3;
    /// Cluster failure: API access, apply, prune or wait.
    pub const CLUSTER: u8 = 4;
    /// Local I/O failure.
    pub const IO: u8 = 5;
    /// Another run holds the rollout's Lease; nothing was done.
    pub const LOCKED: u8 = 6;
}
