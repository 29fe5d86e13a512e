//! Waiting until objects are ready by the per-kind rules of [`readiness`].

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Action, ApplyError, Change, ChangeSet, Manager, Readiness, readiness};
use crate::manifest::ObjectRef;

/// Options of [`Manager::wait`].
#[derive(Clone, Debug)]
pub struct WaitOptions {
    pub timeout: Duration,
    pub poll_interval: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
        }
    }
}

/// One poll of [`Manager::wait`]: how many objects are ready and what the others wait for.
#[derive(Clone, Debug, Serialize)]
pub struct WaitProgress {
    pub ready: usize,
    pub total: usize,
    pub pending: Vec<(String, String)>,
    pub elapsed_secs: u64,
}

impl Manager {
    /// Polls (one LIST per kind involved) until every object in `ids` is ready by the
    /// per-kind rules of [`readiness`], one is failed, or the timeout passes.
    /// `progress` is called after every poll.
    pub async fn wait(
        &self,
        ids: &[ObjectRef],
        opts: &WaitOptions,
        progress: &mut dyn FnMut(&WaitProgress),
    ) -> Result<ChangeSet, ApplyError> {
        let start = Instant::now();
        let namespaces: BTreeSet<String> = ids.iter().filter_map(|i| i.namespace.clone()).collect();
        loop {
            let live = self.live(&namespaces).await?;
            let mut pending = Vec::new();
            let mut ready = 0;
            for id in ids {
                match live.get(id).map(|v| readiness(id.kind, v)) {
                    Some(Readiness::Ready) => ready += 1,
                    Some(Readiness::Failed(reason)) => {
                        return Err(ApplyError::WaitFailed {
                            object: id.to_string(),
                            reason,
                        });
                    }
                    Some(Readiness::Pending(r)) => pending.push((id.to_string(), r)),
                    None => pending.push((id.to_string(), "does not exist".to_string())),
                }
            }
            progress(&WaitProgress {
                ready,
                total: ids.len(),
                pending: pending.clone(),
                elapsed_secs: start.elapsed().as_secs(),
            });
            if pending.is_empty() {
                let mut cs = self.change_set(false);
                for id in ids {
                    cs.push(Change::new(id, Action::Unchanged, Some("ready".into())));
                }
                return Ok(cs);
            }
            if start.elapsed() + opts.poll_interval > opts.timeout {
                return Err(ApplyError::WaitTimeout {
                    seconds: opts.timeout.as_secs(),
                    pending: pending
                        .iter()
                        .map(|(o, r)| format!("{o} ({r})"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            tokio::time::sleep(opts.poll_interval).await;
        }
    }
}
