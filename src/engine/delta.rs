//! Offline runs that redo only the datasets whose inputs changed (issue 15).
//!
//! A spec that differs from the head's inputs in one dataset of a thousand used to mean the
//! whole work: every committed file parsed, every dataset decided and rendered. Offline, one
//! dataset's decision and objects follow from its own spec entry, from what all datasets share
//! (the rollout's metadata and snapshot class, the build, the templates, the folder and the
//! decision options) and from its own objects in Git, grouped by its label: no decision reads
//! another dataset's objects or spec (`rollout::decide_each` decides each dataset alone, and
//! the atomic switch and the source roll-forward look their dataset up by name). So when the
//! branch head is a fixed point of known inputs, a dataset whose inputs are unchanged keeps its
//! files and its decision, and only the others are read, decided and rendered.
//!
//! What the head was made from, dataset by dataset, is a [`Table`] kept beside the repository
//! (`<git dir>/snaproll`, never committed). It is written only after a commit that recorded
//! the fingerprint (its content was checked to be a fixed point) and carried nothing over from
//! Git, and it is used only while the branch head is that very commit and still carries its
//! fingerprint. Anything else means the full run: no table or another head, a shared input
//! that differs, a dataset that left the spec, an object held over (a removed dataset, a
//! source claim still in use), a file the table names that the head lacks. Debug builds (so
//! every test) do the full run as well and assert the same files, decisions and generation.

use std::collections::{BTreeMap, BTreeSet};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::rollout::{self, Decision};
use crate::spec::{Dataset, Rollout, RolloutSpec};

/// Bumped whenever what a table means changes; a table of another format is ignored.
const FORMAT: u32 = 1;

/// What the branch head was made from, by dataset: the inputs' digests, each dataset's files
/// and its decision (for the report of a run that does not decide it again).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Table {
    format: u32,
    /// The commit this table describes; any other head makes it useless.
    pub(super) head: String,
    /// The digest of what every dataset shares ([`Digests::shared`]).
    shared: String,
    datasets: BTreeMap<String, Entry>,
}

/// One dataset of a [`Table`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    digest: String,
    /// Its objects' file names in the folder.
    files: Vec<String>,
    /// The newest generation it rendered (what a commit message names).
    newest: Option<String>,
    decision: Decision,
}

/// The name a table is kept under for `folder` (one table per folder of a repository).
pub(super) fn key(folder: &str) -> String {
    format!("offline-{}", &hex(digest(&[folder.as_bytes()]))[..32])
}

/// The inputs of a run's datasets: one digest for what they share, one per dataset.
#[derive(Clone, Debug)]
pub(super) struct Digests {
    pub(super) shared: String,
    pub(super) datasets: BTreeMap<String, String>,
}

impl Digests {
    /// `None` when an input cannot be read (a `--templates` file): then no table is used or
    /// written.
    pub(super) fn of(
        rollout: &Rollout,
        opts: &rollout::Options,
        templates: Option<&std::path::Path>,
        folder: &str,
    ) -> Option<Digests> {
        let snapshot_timeout = match opts.snapshot_timeout {
            Some(t) => t.as_nanos().to_be_bytes().to_vec(),
            None => b"\0spec".to_vec(),
        };
        let head = serde_json::to_vec(&(
            &rollout.api_version,
            &rollout.kind,
            &rollout.metadata,
            &rollout.spec.snapshot_class,
        ))
        .ok()?;
        let mut parts: Vec<Vec<u8>> = vec![
            b"snaproll-delta-v1".to_vec(),
            env!("CARGO_PKG_VERSION").into(),
            env!("SNAPROLL_GIT_COMMIT").into(),
            folder.into(),
            opts.generation.all.as_deref().unwrap_or("\0none").into(),
            opts.today.as_bytes().to_vec(),
            vec![u8::from(opts.start)],
            snapshot_timeout,
            head,
        ];
        if let Some(dir) = templates {
            let mut files = Vec::new();
            super::fingerprint::collect(dir, dir, &mut files).ok()?;
            files.sort();
            for (name, bytes) in files {
                parts.push(name.into_bytes());
                parts.push(bytes);
            }
        }
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let shared = hex(digest(&parts));
        let mut datasets = BTreeMap::new();
        for d in &rollout.spec.datasets {
            let spec = serde_json::to_vec(d).ok()?;
            let generation = opts.generation.by_dataset.get(&d.name);
            let generation = generation.map(String::as_str).unwrap_or("\0none");
            let digest = hex(digest(&[&spec, generation.as_bytes()]));
            datasets.insert(d.name.clone(), digest);
        }
        Some(Digests { shared, datasets })
    }
}

/// What a table says about a run with `digests`: the datasets to redo (spec order), or `None`
/// when the table cannot stand for the head's content under these inputs.
pub(super) fn changed<'a>(
    table: &Table,
    digests: &Digests,
    rollout: &'a Rollout,
) -> Option<Vec<&'a Dataset>> {
    if table.format != FORMAT || table.shared != digests.shared {
        return None;
    }
    // A dataset that left the spec retires over several runs with objects held over from
    // Git: only the full run knows them.
    if table
        .datasets
        .keys()
        .any(|name| !digests.datasets.contains_key(name))
    {
        return None;
    }
    Some(
        rollout
            .spec
            .datasets
            .iter()
            .filter(|d| {
                table.datasets.get(&d.name).map(|e| &e.digest) != digests.datasets.get(&d.name)
            })
            .collect(),
    )
}

impl Table {
    /// Reads a kept table; `None` when it is not one this build wrote.
    pub(super) fn parse(bytes: &[u8]) -> Option<Table> {
        serde_json::from_slice::<Table>(bytes)
            .ok()
            .filter(|t| t.format == FORMAT)
    }

    pub(super) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a table serializes")
    }

    /// The files the table lists for `dataset` (none for a dataset it does not know).
    pub(super) fn files_of(&self, dataset: &str) -> &[String] {
        self.datasets
            .get(dataset)
            .map(|e| e.files.as_slice())
            .unwrap_or_default()
    }

    /// The decision and newest generation kept for `dataset`.
    pub(super) fn kept(&self, dataset: &str) -> Option<(&Decision, Option<&str>)> {
        self.datasets
            .get(dataset)
            .map(|e| (&e.decision, e.newest.as_deref()))
    }

    /// A table with no dataset yet, for inputs with `digests`.
    pub(super) fn empty(digests: &Digests) -> Table {
        Table {
            format: FORMAT,
            head: String::new(),
            shared: digests.shared.clone(),
            datasets: BTreeMap::new(),
        }
    }

    /// Whether the table has an entry for every dataset of `rollout` and no other.
    pub(super) fn covers(&self, rollout: &Rollout) -> bool {
        self.datasets.len() == rollout.spec.datasets.len()
            && rollout
                .spec
                .datasets
                .iter()
                .all(|d| self.datasets.contains_key(&d.name))
    }

    /// Replaces the entries of the datasets `decisions` decided (their objects in `set`):
    /// the decisions a run from the committed content makes (the fixed-point check's), which
    /// is what a full run reports for a dataset until its inputs or the head change. `None`
    /// when a decision holds something (only a full run sees it again).
    pub(super) fn update(
        &mut self,
        digests: &Digests,
        rollout: &Rollout,
        decisions: &[Decision],
        set: &crate::render::RenderedSet,
    ) -> Option<()> {
        let mut files: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for o in &set.objects {
            if let Some(d) = &o.dataset {
                files.entry(d.as_str()).or_default().push(o.id.file_name());
            }
        }
        for decision in decisions {
            if decision.removed || decision.held_source.is_some() {
                return None;
            }
            let name = decision.dataset.as_str();
            rollout.spec.datasets.iter().find(|d| d.name == name)?;
            self.datasets.insert(
                name.to_string(),
                Entry {
                    digest: digests.datasets.get(name)?.clone(),
                    files: files.remove(name).unwrap_or_default(),
                    newest: decision.render.iter().map(|g| g.id.clone()).max(),
                    decision: decision.clone(),
                },
            );
        }
        Some(())
    }

    pub(super) fn with_head(mut self, head: String) -> Table {
        self.head = head;
        self
    }
}

/// `rollout` with only `datasets` (what a partial run decides and renders).
pub(super) fn subset(rollout: &Rollout, datasets: &[&Dataset]) -> Rollout {
    Rollout {
        api_version: rollout.api_version.clone(),
        kind: rollout.kind.clone(),
        metadata: rollout.metadata.clone(),
        spec: RolloutSpec {
            snapshot_class: rollout.spec.snapshot_class.clone(),
            datasets: datasets.iter().map(|d| (*d).clone()).collect(),
        },
    }
}

/// The files a `kustomization.yaml` written by [`crate::render::kustomization_of`] lists;
/// `None` for one in any other form.
pub(super) fn listed(kustomization: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(kustomization).ok()?;
    let (head, list) = text.split_once("resources:\n")?;
    if crate::render::kustomization_of(std::iter::empty::<&str>()) != format!("{head}resources:\n")
    {
        return None;
    }
    list.lines()
        .map(|l| {
            l.strip_prefix("  - ")
                .filter(|f| {
                    f.ends_with(".yaml") && !f.contains(|c: char| c.is_whitespace() || c == '/')
                })
                .map(str::to_string)
        })
        .collect()
}

/// The order objects are applied in, from their file names (`NN-kind-name.yaml`): by kind,
/// then by name, as `manifest::sort_for_apply` orders their identities (every object of one
/// kind shares the rollout's namespace). Not the file names' own order: `a-b` sorts before
/// `a` as a file name (`-` before `.`), after it as a name.
pub(super) fn apply_order(names: &mut [String]) {
    fn key(file: &str) -> (&str, &str) {
        let (order, rest) = file.split_once('-').unwrap_or(("", file));
        let name = rest.split_once('-').map_or(rest, |(_, n)| n);
        (order, name.strip_suffix(".yaml").unwrap_or(name))
    }
    names.sort_by(|a, b| key(a).cmp(&key(b)));
}

/// `decisions` (of the redone datasets) and the table's for the others, in the spec's order.
pub(super) fn merged(rollout: &Rollout, table: &Table, decisions: Vec<Decision>) -> Vec<Decision> {
    let mut fresh: BTreeMap<String, Decision> = decisions
        .into_iter()
        .map(|d| (d.dataset.clone(), d))
        .collect();
    rollout
        .spec
        .datasets
        .iter()
        .filter_map(|d| {
            fresh
                .remove(&d.name)
                .or_else(|| table.kept(&d.name).map(|(k, _)| k.clone()))
        })
        .collect()
}

/// A set of byte strings digested with their lengths (no two lists collide by concatenation).
fn digest(parts: &[&[u8]]) -> ring::digest::Digest {
    let mut h = Context::new(&SHA256);
    for p in parts {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finish()
}

fn hex(d: ring::digest::Digest) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The set of names `files` (request files) and `old` (the files they replace) cover.
pub(super) fn scope<'a>(
    new: impl Iterator<Item = &'a str>,
    old: impl Iterator<Item = &'a str>,
) -> BTreeSet<String> {
    new.chain(old).map(str::to_string).collect()
}

/// A partial offline step: what [`super::Engine::plan`] needs besides the step itself.
pub(super) struct Partial {
    /// The request's files: the redone datasets' objects and `kustomization.yaml`.
    pub(super) files: Vec<crate::gitops::File>,
    /// The folder's files those replace ([`crate::gitops::Request::scope`]).
    pub(super) scope: BTreeSet<String>,
    /// The rollout restricted to the redone datasets (what the fixed-point check decides).
    pub(super) rollout: Rollout,
}

/// What a partial step decided: the step (all decisions; only the redone objects), its plan,
/// the commit's generation, the partial request and the table it started from.
pub(super) struct Planned {
    pub(super) step: super::Step,
    pub(super) plan: rollout::Plan,
    pub(super) generation: String,
    pub(super) partial: Partial,
    pub(super) table: Table,
}

impl super::Engine {
    /// A partial step from the kept table, when it stands for the head (see the module
    /// documentation); `Ok(None)` means the full run.
    pub(super) fn plan_partial(
        &self,
        checkout: &crate::gitops::Checkout,
        keeper: &crate::gitops::Keeper,
        digests: &Digests,
        opts: &rollout::Options,
    ) -> Result<Option<Planned>, super::EngineError> {
        let rollout = &self.loaded.rollout;
        let Some(table) = keeper.read().as_deref().and_then(Table::parse) else {
            return Ok(None);
        };
        let Some(changed) = changed(&table, digests, rollout) else {
            return Ok(None);
        };
        let git_err = |source| super::EngineError::Git {
            rollout: rollout.metadata.name.clone(),
            source: Box::new(source),
        };
        let step_err = |source| super::EngineError::Step {
            rollout: rollout.metadata.name.clone(),
            source,
        };
        let head = checkout.vouched_head().map_err(git_err)?;
        if head.map(|h| h.to_string()).as_deref() != Some(table.head.as_str()) {
            return Ok(None);
        }
        let mut old: Vec<&str> = changed
            .iter()
            .flat_map(|d| table.files_of(&d.name))
            .map(String::as_str)
            .collect();
        old.push("kustomization.yaml");
        let mut contents = checkout.read_named(&old).map_err(git_err)?;
        old.pop();
        let (Some(Some(kustomization)), true) =
            (contents.pop(), contents.iter().all(Option::is_some))
        else {
            tracing::debug!("the kept table names files the head does not hold: the full run");
            return Ok(None);
        };
        let Some(listed) = listed(&kustomization) else {
            return Ok(None);
        };
        let files: Vec<crate::gitops::File> = old
            .iter()
            .zip(contents)
            .map(|(path, content)| crate::gitops::File {
                path: path.to_string(),
                content: content.unwrap_or_default(),
                objects: Vec::new(),
            })
            .collect();
        let (_, manifests) = super::parse_committed(&files);
        if manifests.len() != files.len() {
            return Ok(None);
        }
        let sub = subset(rollout, &changed);
        let namespace = &rollout.metadata.namespace;
        let (observed, decisions, plan) =
            super::observe::decide_from_git(&manifests, &sub, opts).map_err(step_err)?;
        let holds = rollout::removed_git_holds(&sub, &rollout.metadata.name, &manifests);
        if !holds.is_empty() || !rollout::source_holds(&decisions, namespace).is_empty() {
            return Ok(None);
        }
        let set = self
            .renderer
            .render(&sub, &plan)
            .map_err(|e| step_err(super::StepError::Render(e)))?;
        // This run's decisions stand in for the redone datasets' until the commit's check.
        let mut next = table.clone();
        if next.update(digests, &sub, &decisions, &set).is_none() {
            return Ok(None);
        }
        // The request: the redone objects, and the listing with theirs in place of the old.
        let new_names: Vec<String> = set.objects.iter().map(|o| o.id.file_name()).collect();
        let scope = scope(
            new_names.iter().map(String::as_str),
            old.iter().copied().chain(["kustomization.yaml"]),
        );
        let mut names: Vec<String> = listed
            .into_iter()
            .filter(|n| !scope.contains(n))
            .chain(new_names)
            .collect();
        apply_order(&mut names);
        let mut request: Vec<crate::gitops::File> = set
            .objects
            .iter()
            .map(|o| crate::gitops::File {
                path: o.id.file_name(),
                content: o.yaml.clone().into_bytes(),
                objects: vec![o.id.to_string()],
            })
            .collect();
        request.push(crate::gitops::File {
            path: "kustomization.yaml".to_string(),
            content: crate::render::kustomization_of(names.iter().map(String::as_str)).into_bytes(),
            objects: Vec::new(),
        });
        let decisions = merged(rollout, &table, decisions);
        let newest = rollout
            .spec
            .datasets
            .iter()
            .filter_map(|d| next.kept(&d.name).and_then(|(_, n)| n))
            .max()
            .map(str::to_string);
        let generation = self.commit_generation(newest, opts);
        tracing::debug!(
            redone = changed.len(),
            kept = rollout.spec.datasets.len() - changed.len(),
            "partial run: only the datasets whose inputs changed"
        );
        Ok(Some(Planned {
            step: super::Step {
                observed,
                decisions,
                set,
                live: None,
            },
            plan,
            generation,
            partial: Partial {
                files: request,
                scope,
                rollout: sub,
            },
            table,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_order_is_by_kind_then_name_not_by_file_name() {
        let mut names: Vec<String> = [
            "60-statefulset-a.yaml",
            "20-persistentvolumeclaim-a.yaml",
            "20-persistentvolumeclaim-a-b.yaml",
            "10-volumesnapshotclass-c.yaml",
        ]
        .map(String::from)
        .to_vec();
        apply_order(&mut names);
        assert_eq!(
            names,
            [
                "10-volumesnapshotclass-c.yaml",
                "20-persistentvolumeclaim-a.yaml",
                "20-persistentvolumeclaim-a-b.yaml",
                "60-statefulset-a.yaml",
            ]
        );
    }

    #[test]
    fn only_snaprolls_own_kustomization_is_read() {
        let ours = crate::render::kustomization_of(["a.yaml", "b.yaml"].into_iter());
        assert_eq!(
            listed(ours.as_bytes()),
            Some(vec!["a.yaml".to_string(), "b.yaml".to_string()])
        );
        assert_eq!(listed(b"resources:\n  - a.yaml\n"), None);
        let edited = ours.replace("  - b.yaml", "  -  b.yaml");
        assert_eq!(listed(edited.as_bytes()), None);
    }
}
