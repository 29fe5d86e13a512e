//! One run at a time: a `coordination.k8s.io/v1` Lease per rollout.
//!
//! A run that writes the rollout first takes the Lease `snaproll-<rollout>` in the rollout's
//! namespace ([`Manager::acquire_lease`]), renews it in the background every third of its
//! duration while it works, checks it ([`LeaseGuard::check`]) before each write, and releases
//! it at the end ([`LeaseGuard::release`]). A second run finds it held and stops before writing
//! anything ([`ApplyError::Locked`]). A run that crashed leaves the Lease held until it
//! expires (`renewTime + leaseDurationSeconds`); the next run after that takes it over.
//!
//! Every write is conditional on the `resourceVersion` read just before, so of two runs that
//! both see a free Lease exactly one wins; the other reads again and reports the winner.
//!
//! Times come from the real clock (never a run's `--now`): expiry is about other processes'
//! progress, not about which generation the run picks. Runners whose clocks disagree by more
//! than the duration could take a live Lease over; keep node clocks synchronised.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::{ApiCause, ApplyError, Manager, Verb};

/// Name of a rollout's Lease (the same name as its ApplySet parent ConfigMap, another kind).
pub fn lease_name(rollout: &str) -> String {
    format!("snaproll-{rollout}")
}

/// Held while a run writes the rollout; renewed in the background; released at the end.
///
/// Dropping the guard stops the renewal without releasing: a run that dies leaves the Lease
/// to expire, so no other run starts while the dead one's writes may still be in flight.
///
/// The renewal is a task on the runtime that ran [`Manager::acquire_lease`]: with a
/// multi-thread runtime it runs while the caller's thread is blocked (`std::thread::sleep`
/// between `--wait` polls); a current-thread runtime would starve it.
pub struct LeaseGuard {
    mgr: Manager,
    name: String,
    holder: String,
    duration: Duration,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What the renewal task and the guard share.
struct Shared {
    /// The Lease as this run last wrote or read it: its resourceVersion is the precondition of
    /// the next write.
    current: Mutex<Lease>,
    /// When the last successful take or renewal was sent (the hold lasts `duration` from it).
    renewed_at: Mutex<Instant>,
    /// Why the hold was lost, once it was.
    lost: Mutex<Option<String>>,
}

impl Manager {
    /// Takes the rollout's Lease `snaproll-<rollout>` in the rollout's namespace: creates it,
    /// or takes it over when it is free (released: no holder) or expired (renewTime +
    /// leaseDurationSeconds < now), using the resourceVersion as a precondition so two runs
    /// cannot both win. Otherwise [`ApplyError::Locked`] naming the holder, when it renewed
    /// last and when it expires. Requests count as `lease_reads`/`lease_writes`.
    pub async fn acquire_lease(&self, duration: Duration) -> Result<LeaseGuard, ApplyError> {
        let duration = duration.max(Duration::from_secs(1));
        let name = lease_name(&self.rollout);
        let holder = identity();
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let failed = |source: ApiCause| ApplyError::Lease {
            action: "taking",
            lease: self.lease_display(),
            source,
        };
        let mut last_conflict = None;
        // A lost race costs one more round (read the winner, report it); four rounds are
        // enough for anything but a Lease rewritten continuously by others.
        for _ in 0..4 {
            let got = self
                .call(Verb::LeaseRead, || api.get_opt(&name))
                .await
                .map_err(failed)?;
            let sent = Instant::now();
            let now = Timestamp::now();
            let result = match got {
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(self.namespace.clone()),
                            labels: Some(BTreeMap::from([(
                                crate::manifest::LABEL_MANAGED_BY.to_string(),
                                "snaproll".to_string(),
                            )])),
                            ..ObjectMeta::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(holder.clone()),
                            lease_duration_seconds: Some(secs(duration)),
                            acquire_time: Some(MicroTime(now)),
                            renew_time: Some(MicroTime(now)),
                            lease_transitions: Some(0),
                            ..LeaseSpec::default()
                        }),
                    };
                    let pp = PostParams::default();
                    self.call(Verb::LeaseWrite, || api.create(&pp, &lease))
                        .await
                }
                Some(lease) => {
                    let spec = lease.spec.clone().unwrap_or_default();
                    let current = spec.holder_identity.clone().unwrap_or_default();
                    if current == holder {
                        // Our own write whose answer was lost and that a retry then found.
                        return Ok(self.guard(name, holder, duration, lease, sent));
                    }
                    if !current.is_empty() {
                        let (renewed, expires_in) = expiry(&spec, duration, now);
                        if expires_in > 0 {
                            return Err(ApplyError::Locked {
                                rollout: self.rollout.clone(),
                                lease: self.lease_display(),
                                holder: current,
                                renewed,
                                expires_in: (expires_in as u64).div_ceil(1000),
                            });
                        }
                        tracing::info!(lease = %self.lease_display(), previous = %current, "taking over an expired Lease");
                    }
                    let mut taken = lease.clone();
                    taken.spec = Some(LeaseSpec {
                        holder_identity: Some(holder.clone()),
                        lease_duration_seconds: Some(secs(duration)),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + 1),
                        ..spec
                    });
                    let pp = PostParams::default();
                    self.call(Verb::LeaseWrite, || api.replace(&name, &pp, &taken))
                        .await
                }
            };
            match result {
                Ok(lease) => return Ok(self.guard(name, holder, duration, lease, sent)),
                // Another run created or wrote it between our read and our write: read again.
                Err(c) if c.code == Some(409) => last_conflict = Some(c),
                Err(c) => return Err(failed(c)),
            }
        }
        Err(failed(
            last_conflict.unwrap_or_else(|| ApiCause::timeout(Duration::ZERO)),
        ))
    }

    fn lease_display(&self) -> String {
        format!("{}/{}", self.namespace, lease_name(&self.rollout))
    }

    fn guard(
        &self,
        name: String,
        holder: String,
        duration: Duration,
        lease: Lease,
        sent: Instant,
    ) -> LeaseGuard {
        tracing::debug!(lease = %self.lease_display(), %holder, "took the Lease");
        let shared = Arc::new(Shared {
            current: Mutex::new(lease),
            renewed_at: Mutex::new(sent),
            lost: Mutex::new(None),
        });
        let task = tokio::spawn(renew_loop(
            self.clone(),
            name.clone(),
            holder.clone(),
            duration,
            shared.clone(),
        ));
        LeaseGuard {
            mgr: self.clone(),
            name,
            holder,
            duration,
            shared,
            task: Some(task),
        }
    }
}

impl LeaseGuard {
    /// Err([`ApplyError::LeaseLost`]) once a renewal failed or someone else took the lease
    /// (or no renewal succeeded for a whole lease duration): the caller must stop writing.
    // The same error type as every other step of a run (the caller's `?` needs no mapping);
    // it is built only on the way out of a run, so its size costs nothing.
    #[allow(clippy::result_large_err)]
    pub fn check(&self) -> Result<(), ApplyError> {
        if let Some(reason) = self.shared.lost.lock().unwrap().clone() {
            return Err(self.lost(reason));
        }
        let since = self.shared.renewed_at.lock().unwrap().elapsed();
        if since >= self.duration {
            return Err(self.lost(format!(
                "not renewed for {}s, it may have expired",
                since.as_secs()
            )));
        }
        Ok(())
    }

    /// Releases (clears holderIdentity, keeps the object) and stops renewing. A hold that was
    /// lost is left alone (it is someone else's now) and reported as
    /// [`ApplyError::LeaseLost`].
    pub async fn release(mut self) -> Result<(), ApplyError> {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        if let Some(reason) = self.shared.lost.lock().unwrap().clone() {
            return Err(self.lost(reason));
        }
        let current = self.shared.current.lock().unwrap().clone();
        let released = write(&self.mgr, &self.name, &self.holder, current, |spec| {
            spec.holder_identity = None;
        })
        .await;
        match released {
            Ok(_) => {
                tracing::debug!(lease = %self.mgr.lease_display(), "released the Lease");
                Ok(())
            }
            Err(Write::Lost(reason)) => Err(self.lost(reason)),
            Err(Write::Failed(source)) => Err(ApplyError::Lease {
                action: "releasing",
                lease: self.mgr.lease_display(),
                source,
            }),
        }
    }

    /// This run's `holderIdentity`.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn lost(&self, reason: String) -> ApplyError {
        ApplyError::LeaseLost {
            lease: self.mgr.lease_display(),
            holder: self.holder.clone(),
            reason,
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Renews every third of the duration until aborted or lost. A renewal (retries included)
/// must succeed before the hold would expire; otherwise the hold is lost.
async fn renew_loop(
    mgr: Manager,
    name: String,
    holder: String,
    duration: Duration,
    shared: Arc<Shared>,
) {
    let period = duration / 3;
    loop {
        tokio::time::sleep(period).await;
        let sent = Instant::now();
        let deadline = *shared.renewed_at.lock().unwrap() + duration;
        let current = shared.current.lock().unwrap().clone();
        let renew = write(&mgr, &name, &holder, current, |spec| {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        });
        let reason =
            match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), renew)
                .await
            {
                Ok(Ok(lease)) => {
                    *shared.current.lock().unwrap() = lease;
                    *shared.renewed_at.lock().unwrap() = sent;
                    continue;
                }
                Ok(Err(Write::Lost(reason))) => reason,
                Ok(Err(Write::Failed(cause))) => format!("renewing it failed: {cause}"),
                Err(_) => "no renewal succeeded before it expired".to_string(),
            };
        // Info, not warn: the caller reports the loss as its one-line error.
        tracing::info!(lease = %mgr.lease_display(), %reason, "lost the Lease");
        *shared.lost.lock().unwrap() = Some(reason);
        return;
    }
}

/// Why a conditional write of a held Lease did not happen.
enum Write {
    /// The Lease is no longer ours (someone else holds it, or it is gone).
    Lost(String),
    /// The API failed (after the retry budget).
    Failed(ApiCause),
}

/// Writes `lease` changed by `edit`, conditional on its resourceVersion. On a conflict, reads
/// it again: still ours (our own earlier write whose answer was lost, or someone touching
/// other fields) means write again on top of it; anyone else's means lost.
async fn write(
    mgr: &Manager,
    name: &str,
    holder: &str,
    mut lease: Lease,
    edit: impl Fn(&mut LeaseSpec),
) -> Result<Lease, Write> {
    let api: Api<Lease> = Api::namespaced(mgr.client.clone(), &mgr.namespace);
    let pp = PostParams::default();
    let mut last = None;
    for _ in 0..3 {
        let mut next = lease.clone();
        edit(next.spec.get_or_insert_with(LeaseSpec::default));
        match mgr
            .call(Verb::LeaseWrite, || api.replace(name, &pp, &next))
            .await
        {
            Ok(written) => return Ok(written),
            Err(c) if c.code == Some(409) => last = Some(c),
            Err(c) if c.is_not_found() => return Err(Write::Lost("it was deleted".into())),
            Err(c) => return Err(Write::Failed(c)),
        }
        let got = mgr
            .call(Verb::LeaseRead, || api.get_opt(name))
            .await
            .map_err(Write::Failed)?;
        let Some(got) = got else {
            return Err(Write::Lost("it was deleted".into()));
        };
        let spec = got.spec.clone().unwrap_or_default();
        match spec.holder_identity.as_deref() {
            Some(h) if h == holder => lease = got,
            Some(h) if !h.is_empty() => {
                return Err(Write::Lost(format!(
                    "{h} took it over (renewed {})",
                    spec.renew_time
                        .as_ref()
                        .map(|t| rfc3339(t.0))
                        .unwrap_or_else(|| "never".into())
                )));
            }
            _ => return Err(Write::Lost("someone else released it".into())),
        }
    }
    Err(Write::Failed(
        last.unwrap_or_else(|| ApiCause::timeout(Duration::ZERO)),
    ))
}

/// The last renewal of a held Lease (RFC 3339, or `never`) and the milliseconds until it
/// expires (zero or less: expired). A Lease without a duration gets the caller's.
fn expiry(spec: &LeaseSpec, duration: Duration, now: Timestamp) -> (String, i64) {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return ("never".to_string(), 0);
    };
    let secs = spec
        .lease_duration_seconds
        .map(i64::from)
        .unwrap_or(duration.as_secs() as i64);
    let expires_at = renewed.0.as_millisecond() + secs * 1000;
    (rfc3339(renewed.0), expires_at - now.as_millisecond())
}

fn rfc3339(t: Timestamp) -> String {
    k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", t)
        .unwrap_or_else(|_| t.to_string())
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// `holderIdentity`: the pod (`$POD_NAME`, else the hostname, which in a pod is its name),
/// the process id and a random suffix, so two runs in one process or one pod never share it.
fn identity() -> String {
    let nonempty = |s: String| {
        let s = s.trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    let host = std::env::var("POD_NAME")
        .ok()
        .and_then(nonempty)
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .and_then(nonempty)
        })
        .or_else(|| std::env::var("HOSTNAME").ok().and_then(nonempty))
        .unwrap_or_else(|| "unknown-host".to_string());
    let mut suffix = [0u8; 3];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix);
    format!(
        "{host}/{}/{:02x}{:02x}{:02x}",
        std::process::id(),
        suffix[0],
        suffix[1],
        suffix[2]
    )
}
