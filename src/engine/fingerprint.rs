//! What an offline (Git-only) run's folder follows from, so that a run with the same inputs
//! stops after reading one commit (issue 15): no committed file read or parsed, nothing
//! decided or rendered.
//!
//! Honesty rests on two parts. The fingerprint digests every input of an offline run besides
//! what Git holds: the parsed spec, the `--templates` files, the build (version and commit:
//! the embedded templates and the code), and the decision options (`--generation`, the UTC
//! date, `start`, the snapshot timeout; offline decisions read the date, never the time). And
//! it is recorded only on a commit whose content is a fixed point, checked by deciding and
//! rendering again from the content being committed ([`is_fixed_point`]): a run that is one
//! step of several (a StatefulSet leaving Git one run before its snapshot) commits without it,
//! so the next run does the full work. Git binds the fingerprint to the folder it produced, so
//! a hand edit of the folder also means the full work.

use std::collections::BTreeSet;
use std::path::Path;

use ring::digest::{Context, SHA256};

use crate::manifest::ObjectRef;
use crate::render::{RenderedSet, Renderer};
use crate::rollout;
use crate::spec::Rollout;

/// The digest of an offline run's inputs (one token, `offline-<sha256>`); `None` when one
/// of them cannot be read (a `--templates` file), and then nothing is skipped or recorded.
pub(super) fn offline(
    spec: &Rollout,
    templates: Option<&Path>,
    opts: &rollout::Options,
    folder: &str,
) -> Option<String> {
    let mut h = Context::new(&SHA256);
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"snaproll-offline-v1");
    field(env!("CARGO_PKG_VERSION").as_bytes());
    field(env!("SNAPROLL_GIT_COMMIT").as_bytes());
    field(&serde_json::to_vec(spec).ok()?);
    field(folder.as_bytes());
    field(
        opts.generation
            .all
            .as_deref()
            .unwrap_or("\0none")
            .as_bytes(),
    );
    field(&(opts.generation.by_dataset.len() as u64).to_be_bytes());
    for (dataset, id) in &opts.generation.by_dataset {
        field(dataset.as_bytes());
        field(id.as_bytes());
    }
    field(opts.today.as_bytes());
    field(&[u8::from(opts.start)]);
    match opts.snapshot_timeout {
        Some(t) => field(&t.as_nanos().to_be_bytes()),
        None => field(b"\0spec"),
    }
    field(opts.rollout.as_bytes());
    field(opts.namespace.as_bytes());
    if let Some(dir) = templates {
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

/// Every file under `dir` (relative name, content).
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
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

/// Whether an offline run from `set` (the content about to be committed) with the same inputs
/// makes exactly `set` again: decided from the set's own objects, with what the engine carries
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
) -> bool {
    let same = same_decision(set, plan, carried, spec, renderer, opts);
    tracing::debug!(
        fixed_point = same,
        "re-decided from the content being committed"
    );
    same
}

fn same_decision(
    set: &RenderedSet,
    plan: &rollout::Plan,
    carried: &[ObjectRef],
    spec: &Rollout,
    renderer: &Renderer,
    opts: &rollout::Options,
) -> bool {
    // The set's values are its YAML parsed (the text is written from them), so this reads
    // what the next run would read, without parsing the text again.
    let manifests: Vec<serde_json::Value> = set.objects.iter().map(|o| o.value.clone()).collect();
    if manifests.iter().any(serde_json::Value::is_null) {
        return false;
    }
    let Ok((_, decisions, next)) = super::observe::decide_from_git(&manifests, spec, opts) else {
        return false;
    };
    if normalized(next.clone(), spec) != normalized(plan.clone(), spec) {
        // A plan that differs may still render the same objects: render it and compare.
        return rendered_again(set, next, &decisions, &manifests, spec, renderer);
    }
    let mut holds = rollout::removed_git_holds(spec, &spec.metadata.name, &manifests);
    holds.extend(rollout::source_holds(&decisions, &spec.metadata.namespace));
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

/// `plan` with each generation's snapshot copies spelled out as the render takes them (`None`
/// is the spec's `snapshot.copies`, at least one), so equal plans are equal renders.
fn normalized(mut plan: rollout::Plan, spec: &Rollout) -> rollout::Plan {
    for d in &spec.spec.datasets {
        if let Some(gens) = plan.datasets.get_mut(&d.name) {
            for g in gens {
                g.copies = Some(g.copies.unwrap_or(d.snapshot.copies).max(1));
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
    manifests: &[serde_json::Value],
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
