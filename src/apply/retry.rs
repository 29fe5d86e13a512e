//! Requests and their one retry budget: bounded backoff for transient failures, the
//! per-verb request counters.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::{ApiCause, Manager};

/// Bounded exponential backoff for transient failures (429, 5xx, timeouts): the one retry
/// budget of every request. kube's own retry layer is off in the clients snaproll builds
/// (`commands::cluster::client`), so `attempts` is the number of requests sent, and the
/// default gives up after 5 attempts and 0.2 + 0.4 + 0.8 + 1.6 = 3 s of backoff (plus each
/// attempt's own time, at most `request_timeout`). A server's `retryAfterSeconds` replaces the
/// backoff delay when longer, capped by `max_delay`.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// Requests made by a [`Manager`], per verb. Every attempt counts, retries included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    pub lists: u64,
    pub gets: u64,
    /// Server-side apply PATCHes that wrote.
    pub applies: u64,
    /// Server-side apply PATCHes with `dryRun=All` (write nothing).
    pub dry_runs: u64,
    pub deletes: u64,
    /// GETs of the run's Lease (`coordination.k8s.io`), apart from the object reads.
    pub lease_reads: u64,
    /// Creates and updates of the run's Lease (take, renew, release): the run's lock, not a
    /// change to the rollout, so [`RequestCounts::writes`] leaves them out and a no-op run
    /// still makes zero object writes.
    pub lease_writes: u64,
    /// Attempts that were retries of a transient failure.
    pub retries: u64,
}

impl RequestCounts {
    /// Every request, Lease traffic included.
    pub fn total(&self) -> u64 {
        self.lists + self.gets + self.applies + self.dry_runs + self.deletes + self.lease()
    }

    /// Requests that change the rollout's objects (Lease traffic excluded).
    pub fn writes(&self) -> u64 {
        self.applies + self.deletes
    }

    /// Requests on the run's Lease.
    pub fn lease(&self) -> u64 {
        self.lease_reads + self.lease_writes
    }
}

#[derive(Default, Debug)]
pub(super) struct Counters {
    lists: AtomicU64,
    gets: AtomicU64,
    applies: AtomicU64,
    dry_runs: AtomicU64,
    deletes: AtomicU64,
    lease_reads: AtomicU64,
    lease_writes: AtomicU64,
    retries: AtomicU64,
}

#[derive(Clone, Copy)]
pub(super) enum Verb {
    List,
    Get,
    Apply,
    DryRun,
    Delete,
    LeaseRead,
    LeaseWrite,
}

impl Manager {
    /// Requests made so far (the counting hook for tests and benchmarks).
    pub fn stats(&self) -> RequestCounts {
        let c = &self.counters;
        RequestCounts {
            lists: c.lists.load(Ordering::Relaxed),
            gets: c.gets.load(Ordering::Relaxed),
            applies: c.applies.load(Ordering::Relaxed),
            dry_runs: c.dry_runs.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            lease_reads: c.lease_reads.load(Ordering::Relaxed),
            lease_writes: c.lease_writes.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    /// Resets the request counters.
    pub fn reset_stats(&self) {
        let c = &self.counters;
        for a in [
            &c.lists,
            &c.gets,
            &c.applies,
            &c.dry_runs,
            &c.deletes,
            &c.lease_reads,
            &c.lease_writes,
            &c.retries,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }

    pub(super) fn count(&self, verb: Verb) {
        let c = &self.counters;
        match verb {
            Verb::List => &c.lists,
            Verb::Get => &c.gets,
            Verb::Apply => &c.applies,
            Verb::DryRun => &c.dry_runs,
            Verb::Delete => &c.deletes,
            Verb::LeaseRead => &c.lease_reads,
            Verb::LeaseWrite => &c.lease_writes,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Runs one request with the per-attempt timeout and retries transient failures, waiting
    /// the backoff delay or the server's `retryAfterSeconds` when longer (both capped by
    /// `max_delay`). The error is the last attempt's, with the number of attempts.
    pub(super) async fn call<T, F, Fut>(&self, verb: Verb, mut f: F) -> Result<T, ApiCause>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.count(verb);
            if attempt > 1 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            let result = match tokio::time::timeout(self.request_timeout, f()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => ApiCause::from_kube(e),
                Err(_) => ApiCause::timeout(self.request_timeout),
            };
            let mut cause = result;
            if !cause.is_transient() || attempt >= self.retry.attempts.max(1) {
                cause.attempts = attempt;
                return Err(cause);
            }
            let backoff = self
                .retry
                .base_delay
                .saturating_mul(1 << (attempt - 1).min(16));
            let delay = backoff
                .max(cause.retry_after.unwrap_or_default())
                .min(self.retry.max_delay);
            tracing::debug!(attempt, ?delay, error = %cause, "transient API error, retrying");
            tokio::time::sleep(delay).await;
        }
    }
}
