//! snaproll: dataset rollouts on Kubernetes with volume snapshots.
//!
//! The library holds everything the `snaproll` binary does, so the integration tests can drive
//! each layer directly. The folders name the pipeline; each module imports only those listed
//! below it, so the pure decisions can be tested without a cluster or a repository:
//!
//! - [`cli`] the arguments only (shared flag groups flattened once); [`commands`] one file per
//!   command: flags → [`engine::Options`] → print (the only place that uses `anyhow`).
//! - [`engine`] the one run behind every command that writes: observe (the cluster, or Git
//!   without one) → [`rollout`] → [`render`] → commit ([`gitops`]) → [`apply`] (and prune),
//!   holding the Lease; it owns the runtime, client and checkout.
//! - [`install`] the objects that run snaproll as a CronJob, and their RBAC rules; [`events`]
//!   the rollout's Kubernetes Events. Both sit on [`apply`].
//! - [`apply`] the cluster: server-side apply, diff, prune, wait, Lease and retries, one file
//!   per verb. It asks [`rollout`] what the prune must hold and [`render`] for what to apply.
//! - [`render`] templates to validated objects, for the parts [`rollout`] decided; [`gitops`]
//!   Git, which knows nothing of Kubernetes.
//! - [`rollout`] the pure decisions: generation states, offline decisions from Git, pins and
//!   retirement (every hold the prune or Git keeps). It imports only [`spec`] and [`manifest`].
//! - [`spec`] (types, parse, validate, names), [`manifest`] (identity, labels, order),
//!   [`schema`] (validation of rendered objects), [`yaml`] (canonical output) and [`input`]
//!   (bounded reads) are the leaves.

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
