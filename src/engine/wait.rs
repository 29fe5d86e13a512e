//! `--wait`: steps until every dataset settled, starting the next step as soon as a watched
//! status changes ([`super::watch`]), or after the poll interval (the resync) at the latest.

use std::time::{Duration, Instant};

use super::watch::Watches;
use super::{Engine, EngineError, Report, summary_lines};
use crate::gitops;

impl Engine {
    /// Steps until every dataset settled or `timeout` passed; between steps it waits for a
    /// watched status change of the rollout's objects, or `poll` (the resync period) at most.
    /// `progress` sees every unsettled step.
    pub fn wait(
        &mut self,
        clock: impl Fn() -> jiff::Timestamp,
        timeout: jiff::SignedDuration,
        poll: Duration,
        mut progress: impl FnMut(Duration, &Report),
    ) -> Result<Report, EngineError> {
        if self.cluster.is_none() {
            return Err(EngineError::Usage(
                "--wait needs cluster access: offline, nothing can be waited for".to_string(),
            ));
        }
        // One clone for all the polls: a URL without --workdir is cloned once into a scratch
        // directory the engine keeps, and each later poll fetches into it.
        if let Some(target) = &mut self.opts.git
            && gitops::is_url(&target.dest.repo)
            && target.dest.workdir.is_none()
        {
            let dir = tempfile::tempdir().map_err(EngineError::Scratch)?;
            target.dest.workdir = Some(dir.path().join("clone"));
            self.scratch = Some(dir);
        }
        let watches = self.cluster.as_ref().map(|c| {
            Watches::start(
                &c.runtime,
                c.manager.client(),
                &c.manager.applyset().namespace,
                &self.loaded.rollout.metadata.name,
                poll,
            )
        });
        let started = Instant::now();
        loop {
            let report = self.step(clock())?;
            if report.settled() || matches!(&report.cluster, Some(Err(_))) {
                return Ok(report);
            }
            if started.elapsed() >= timeout.unsigned_abs() {
                return Err(EngineError::WaitTimeout {
                    after: timeout,
                    pending: summary_lines(&report.decisions).join("; "),
                });
            }
            progress(started.elapsed(), &report);
            match (&watches, &self.cluster) {
                (Some(w), Some(c)) => {
                    let wake = w.pause(&c.runtime, poll);
                    tracing::debug!(?wake, "next step");
                }
                _ => std::thread::sleep(poll),
            }
        }
    }
}
