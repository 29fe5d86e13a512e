//! What a run reports: its decisions, render, Git and cluster outcomes, and the summary lines.

use super::*;

/// What one step of the engine saw, decided and did.
pub struct Report {
    pub rollout: String,
    pub decisions: Vec<Decision>,
    /// The newest generation the step rendered (what a commit message names).
    pub generation: String,
    pub set: RenderedSet,
    /// The commit (or its preview), when Git was written.
    pub git: Option<Outcome>,
    /// The apply or diff, when the cluster was written or compared; a failure carries the
    /// partial change set.
    pub cluster: Option<Result<ChangeSet, Box<Failed>>>,
    /// Whether the decision came from the cluster (else from Git).
    pub from_cluster: bool,
    /// How many times the step observed and decided (more than once: the branch moved).
    pub attempts: u32,
}

impl Report {
    /// Whether any generation failed.
    pub fn failed(&self) -> bool {
        self.decisions.iter().any(Decision::failed)
    }

    /// Whether every dataset has settled: something serves (or failed) and nothing moves.
    pub fn settled(&self) -> bool {
        settled(&self.decisions)
    }

    /// One line per thing the run chose not to do (a clock behind the newest generation) and
    /// per look-alike object it ignored.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in &self.decisions {
            out.extend(d.notes.iter().cloned());
            if !d.foreign.is_empty() {
                out.push(format!(
                    "dataset {}: ignoring {} (the rollout's labels, but not members of its ApplySet: not snaproll's)",
                    d.dataset,
                    d.foreign.join(", ")
                ));
            }
        }
        out
    }
}

/// Whether every dataset has settled: something serves (or failed) and nothing is in motion.
pub fn settled(decisions: &[Decision]) -> bool {
    decisions.iter().all(|d| {
        d.generations.iter().all(|g| {
            !matches!(
                g.state,
                State::Producing
                    | State::Snapshotting
                    | State::Verifying
                    | State::RollingOut
                    | State::Retiring
                    | State::Waiting
            )
        })
    })
}

/// One line per dataset: `data: 2021-07-15 serving (3/3 replicas ready); 2021-07-16 producing`.
pub fn summary_lines(decisions: &[Decision]) -> Vec<String> {
    decisions
        .iter()
        .map(|d| {
            let gens: Vec<String> = d
                .generations
                .iter()
                .map(|g| {
                    if g.detail.is_empty() {
                        format!("{} {}", g.generation, g.state)
                    } else {
                        format!("{} {} ({})", g.generation, g.state, g.detail)
                    }
                })
                .collect();
            let gens = if gens.is_empty() {
                d.waiting
                    .as_deref()
                    .unwrap_or("no generation yet")
                    .to_string()
            } else {
                gens.join("; ")
            };
            format!("{}: {gens}", d.dataset)
        })
        .collect()
}
