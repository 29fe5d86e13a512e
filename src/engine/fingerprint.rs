//! What an offline (Git-only) run's folder follows from, so that a run with the same inputs
//! stops after reading one commit (issue 15): no committed file read or parsed, nothing
//! decided or rendered.
//!
//! Honesty rests on two parts. The fingerprint digests every input of an offline run besides
//! what Git holds: the spec's bytes (and whether they gave warnings), the `--templates` files, the build (version and commit:
//! the embedded templates and the code), and the decision options (`--generation`, the UTC
//! date, `start`, the snapshot timeout; offline decisions read the date, never the time). And
//! it is recorded only on a commit whose content is a fixed point, checked by deciding and
//! rendering again from the content being committed ([`is_fixed_point`]): a run that is one
//! step of several (a StatefulSet leaving Git one run before its snapshot) commits without it,
//! so the next run does the full work. Git binds the fingerprint to the folder it produced, so
//! a hand edit of the folder also means the full work.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ring::digest::{Context, SHA256};

use crate::manifest::ObjectRef;
use crate::render::{RenderedSet, Renderer};
use crate::rollout;
use crate::spec::{GenerationIds, Rollout};

/// An offline run's inputs besides what Git holds, all known before the spec is parsed.
pub(super) struct Inputs<'a> {
    /// The spec file's bytes as read (not the parsed spec: a no-op needs no parse).
    pub spec: &'a [u8],
    /// Whether parsing `spec` gave warnings. The run that records the digest parsed the spec,
    /// so it knows; a run that checks the head before parsing assumes `false`, and a match then
    /// proves those very bytes gave no warnings with this build (nothing to print). A spec
    /// with warnings never matches before the parse: it is parsed, its warnings printed, and
    /// the head is checked again with `true` (see [`super::unchanged`]).
    pub warned: bool,
    pub templates: Option<&'a Path>,
    pub generation: &'a GenerationIds,
    /// The UTC date (offline decisions read the date, never the time).
    pub today: &'a str,
    pub start: bool,
    pub snapshot_timeout: Option<Duration>,
    /// The folder in the repository (`--path`, or `rollouts/<metadata.name>`).
    pub folder: &'a str,
}

/// The digest of an offline run's inputs (one token, `offline-<sha256>`); `None` when one
/// of them cannot be read (a `--templates` file), and then nothing is skipped or recorded.
///
/// The spec enters as its bytes: whatever the spec decides (rollout name, namespace, datasets)
/// follows from them and this build. An edit that changes no meaning (a comment) therefore
/// means one full run, which finds nothing to commit.
pub(super) fn offline(inputs: &Inputs<'_>) -> Option<String> {
    let mut h = Context::new(&SHA256);
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"snaproll-offline-v2");
    field(env!("CARGO_PKG_VERSION").as_bytes());
    field(env!("SNAPROLL_GIT_COMMIT").as_bytes());
    field(inputs.spec);
    field(&[u8::from(inputs.warned)]);
    field(inputs.folder.as_bytes());
    let generation = inputs.generation;
    field(generation.all.as_deref().unwrap_or("\0none").as_bytes());
    field(&(generation.by_dataset.len() as u64).to_be_bytes());
    for (dataset, id) in &generation.by_dataset {
        field(dataset.as_bytes());
        field(id.as_bytes());
    }
    field(inputs.today.as_bytes());
    field(&[u8::from(inputs.start)]);
    match inputs.snapshot_timeout {
        Some(t) => field(&t.as_nanos().to_be_bytes()),
        None => field(b"\0spec"),
    }
    if let Some(dir) = inputs.templates {
        let mut files = Vec::new();
        collect(dir, dir, &mut files).ok()?;
        files.sort();
        for (name, bytes) in files {
            field(name.as_bytes());
            field(&bytes);
        }
    }
    let digest = h.finish();
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("offline-{hex}"))
}

/// The `metadata.name` a spec declares, read from its lines without parsing YAML, for the
/// default folder `rollouts/<name>` of a run that checks the head before parsing. Only a
/// guess: the folder is part of the digest, so a wrong guess (odd quoting, flow style) cannot
/// match the recorded digest and just means the full run.
pub(super) fn declared_name(spec: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(spec).ok()?;
    let mut lines = text.lines().skip_while(|l| l.trim_end() != "metadata:");
    lines.next()?;
    let mut indent = None;
    for line in lines {
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let depth = line.len() - body.len();
        if depth == 0 {
            return None;
        }
        if *indent.get_or_insert(depth) != depth {
            continue;
        }
        if let Some(value) = body.strip_prefix("name:") {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            return Some(value.to_string());
        }
    }
    None
}

/// Every file under `dir` (relative name, content).
pub(super) fn collect(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, Vec<u8>)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else {
            let name = path.strip_prefix(root).unwrap_or(&path);
            out.push((name.to_string_lossy().into_owned(), std::fs::read(&path)?));
        }
    }
    Ok(())
}

/// The decisions of an offline run from `set` (the content about to be committed) with the
/// same inputs, when that run makes exactly `set` again (else `None`): decided from the set's own objects, with what the engine carries
/// over from Git carried over from them. Only then may the commit record the fingerprint.
///
/// `set` is the render of `plan` (by this build, from this spec) plus `carried`. The render is
/// a function of the spec and the plan, so when the next decision's plan equals `plan` it
/// renders the same objects, and nothing needs rendering again: what is left to check is that
/// the next run carries the same objects over, in the same order.
pub(super) fn is_fixed_point(
    set: &RenderedSet,
    plan: &rollout::Plan,
    carried: &[ObjectRef],
    spec: &Rollout,
    renderer: &Renderer,
    opts: &rollout::Options,
) -> Option<Vec<rollout::Decision>> {
    let mut next = None;
    let same = same_decision(set, plan, carried, spec, renderer, opts, &mut next);
    tracing::debug!(
        fixed_point = same,
        "re-decided from the content being committed"
    );
    next.filter(|_| same)
}

/// Whether the next run makes `set` again; its decisions go to `decided` (what a later run
/// that does not decide a dataset again reports for it: see `delta`).
fn same_decision(
    set: &RenderedSet,
    plan: &rollout::Plan,
    carried: &[ObjectRef],
    spec: &Rollout,
    renderer: &Renderer,
    opts: &rollout::Options,
    decided: &mut Option<Vec<rollout::Decision>>,
) -> bool {
    // The set's values are its YAML parsed (the text is written from them), so this reads
    // what the next run would read, without parsing the text again.
    let manifests: Vec<Arc<serde_json::Value>> =
        set.objects.iter().map(|o| o.value.clone()).collect();
    if manifests.iter().any(|v| v.is_null()) {
        return false;
    }
    let Ok((_, decisions, next)) = super::observe::decide_from_git(&manifests, spec, opts) else {
        return false;
    };
    let decisions = &*decided.insert(decisions);
    if normalized(next.clone(), spec) != normalized(plan.clone(), spec) {
        // A plan that differs may still render the same objects: render it and compare.
        tracing::debug!("the next decision plans differently: rendering it to compare");
        return rendered_again(set, next, decisions, &manifests, spec, renderer);
    }
    // Equal normalized plans must render the same: every debug build (every test) proves it.
    #[cfg(debug_assertions)]
    if carried.is_empty() {
        assert!(
            rendered_again(set, next, decisions, &manifests, spec, renderer),
            "equal normalized plans rendered differently"
        );
    }
    let mut holds = rollout::removed_git_holds(spec, &spec.metadata.name, &manifests);
    holds.extend(rollout::source_holds(decisions, &spec.metadata.namespace));
    if !carried.iter().all(|id| holds.contains_key(id)) {
        return false;
    }
    // The next run reads the carried objects from their files, in file-name order, after the
    // rendered ones, then sorts stably by kind: the order must come out as `set`'s.
    let carried_set: BTreeSet<&ObjectRef> = carried.iter().collect();
    let mut next_order: Vec<&ObjectRef> = set
        .objects
        .iter()
        .map(|o| &o.id)
        .filter(|id| !carried_set.contains(id))
        .collect();
    let mut again: Vec<&ObjectRef> = carried.iter().collect();
    again.sort_by_key(|id| id.file_name());
    next_order.extend(again);
    next_order.sort_by_key(|id| id.kind.order());
    next_order.len() == set.objects.len()
        && next_order
            .iter()
            .zip(&set.objects)
            .all(|(a, o)| **a == o.id)
}

/// `plan` with what the render takes from the spec spelled out, so equal plans are equal
/// renders: each generation's snapshot copies (`None` is the spec's `snapshot.copies`, at
/// least one), and the claim storage of a generation without a frozen one or a claim size
/// (`None` renders the spec's storage, which the next run reads back from the StatefulSet
/// as a frozen claim storage of the same fields).
fn normalized(mut plan: rollout::Plan, spec: &Rollout) -> rollout::Plan {
    for d in &spec.spec.datasets {
        if let Some(gens) = plan.datasets.get_mut(&d.name) {
            for g in gens {
                g.copies = Some(g.copies.unwrap_or(d.snapshot.copies).max(1));
                if g.claim_storage.is_none() && g.claim_size.is_none() {
                    g.claim_storage = Some(crate::render::spec_claim_storage(d, &d.storage.size));
                }
            }
        }
    }
    plan
}

/// The full check: render the next plan, carry over as the engine does, compare the files.
fn rendered_again(
    set: &RenderedSet,
    plan: rollout::Plan,
    decisions: &[rollout::Decision],
    manifests: &[Arc<serde_json::Value>],
    spec: &Rollout,
    renderer: &Renderer,
) -> bool {
    let Ok(mut next) = renderer.render(spec, &plan) else {
        return false;
    };
    let mut holds = rollout::removed_git_holds(spec, &spec.metadata.name, manifests);
    holds.extend(rollout::source_holds(decisions, &spec.metadata.namespace));
    if !holds.is_empty() {
        // As the engine carries them: in file order, then stably by kind.
        let rendered: BTreeSet<_> = next.objects.iter().map(|o| o.id.clone()).collect();
        let mut carried: Vec<_> = set
            .objects
            .iter()
            .filter(|o| holds.contains_key(&o.id) && !rendered.contains(&o.id))
            .collect();
        carried.sort_by_key(|o| o.id.file_name());
        next.objects.extend(carried.into_iter().cloned());
        next.objects.sort_by_key(|o| o.id.kind.order());
    }
    next.files() == set.files()
}

#[cfg(test)]
mod tests {
    use super::declared_name;

    #[test]
    fn declared_name_reads_plain_and_quoted_names_and_gives_up_otherwise() {
        let spec = "apiVersion: x\nkind: DatasetRollout\nmetadata:\n  # c\n  labels:\n    name: no\n  name: demo\nspec: {}\n";
        assert_eq!(declared_name(spec.as_bytes()).as_deref(), Some("demo"));
        let quoted = "metadata:\n  namespace: n\n  name: \"demo\"\n";
        assert_eq!(declared_name(quoted.as_bytes()).as_deref(), Some("demo"));
        assert_eq!(declared_name(b"metadata: {name: demo}\n"), None);
        assert_eq!(
            declared_name(b"metadata:\n  namespace: n\nspec:\n  name: x\n"),
            None
        );
    }
}
