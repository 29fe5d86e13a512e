//! The rollout's Lease: one run at a time writes a rollout.

use std::time::Duration;

use super::{Engine, EngineError};
/// How long a Lease held by a run that stopped renewing it (a crash) blocks the next run.
pub const LEASE_DURATION: Duration = Duration::from_secs(60);

impl Engine {
    pub(super) fn take_lease(&mut self) -> Result<(), EngineError> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        let guard = c
            .runtime
            .block_on(c.manager.acquire_lease(LEASE_DURATION))
            .map_err(|source| EngineError::Lease {
                rollout: self.loaded.rollout.metadata.name.clone(),
                source: Box::new(source),
            })?;
        tracing::debug!(holder = guard.holder(), "took the rollout's Lease");
        self.lease = Some(guard);
        Ok(())
    }

    pub(super) fn check_lease(&self) -> Result<(), EngineError> {
        match &self.lease {
            Some(l) => l.check().map_err(|source| EngineError::Lease {
                rollout: self.rollout_name(),
                source: Box::new(source),
            }),
            None => Ok(()),
        }
    }

    /// Releases the Lease (a crash leaves it to expire instead).
    pub fn finish(mut self) -> Result<(), EngineError> {
        let rollout = self.rollout_name();
        if let (Some(lease), Some(c)) = (self.lease.take(), &self.cluster) {
            c.runtime
                .block_on(lease.release())
                .map_err(|source| EngineError::Lease {
                    rollout,
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }
}
