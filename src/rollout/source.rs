//! Immutable changes of the shared source claim roll forward to fresh claims.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Decision, Observed};
use crate::spec::{self, Dataset, Rollout};
/// What in the shared source claim `live` the API server would refuse to change to `d`'s
/// storage spec in place (a claim's spec is immutable but for a larger size): `None` when it
/// can be applied. A storage class the spec leaves out is the server's default: not a change.
pub fn source_change(d: &Dataset, live: &Value) -> Option<String> {
    let spec = &d.storage;
    let mut changes = Vec::new();
    let have = |p: &str| live.pointer(p);
    if let Some(want) = &spec.storage_class_name
        && have("/spec/storageClassName").and_then(Value::as_str) != Some(want.as_str())
    {
        changes.push(format!(
            "storageClassName {} -> {want}",
            have("/spec/storageClassName")
                .and_then(Value::as_str)
                .unwrap_or("(default)")
        ));
    }
    let modes: Vec<String> = spec.access_modes.iter().map(|m| format!("{m:?}")).collect();
    let live_modes: Vec<String> = have("/spec/accessModes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    if !live_modes.is_empty() && sorted(live_modes.clone()) != sorted(modes.clone()) {
        changes.push(format!(
            "accessModes {} -> {}",
            live_modes.join(","),
            modes.join(",")
        ));
    }
    let mode = format!("{:?}", spec.volume_mode);
    if let Some(m) = have("/spec/volumeMode").and_then(Value::as_str)
        && m != mode
    {
        changes.push(format!("volumeMode {m} -> {mode}"));
    }
    let size = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|q| spec::quantity::parse(q).ok())
    };
    if let (Some(have_size), Some(want)) = (
        size(have("/spec/resources/requests/storage")),
        spec::quantity::parse(&spec.size).ok(),
    ) && want < have_size
    {
        changes.push(format!(
            "size {} -> {} (claims never shrink)",
            have("/spec/resources/requests/storage")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            spec.size
        ));
    }
    (!changes.is_empty()).then(|| changes.join(", "))
}

/// The storage of a StatefulSet's claim template (immutable once created).
fn claim_storage_of(sts: &Value) -> Option<super::ClaimStorage> {
    let spec = sts.pointer("/spec/volumeClaimTemplates/0/spec")?;
    let text = |p: &str| spec.pointer(p).and_then(Value::as_str).map(String::from);
    Some(super::ClaimStorage {
        storage_class_name: text("/storageClassName"),
        access_modes: spec
            .get("accessModes")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        volume_mode: text("/volumeMode").unwrap_or_else(|| "Filesystem".to_string()),
        size: text("/resources/requests/storage")?,
    })
}

/// The claim a generation's producer filled: its snapshot's source, else its producer's volume.
fn source_of(o: &Observed) -> Option<String> {
    let from_snapshot = o
        .snapshot
        .as_ref()
        .and_then(|s| s.pointer("/spec/source/persistentVolumeClaimName"))
        .and_then(Value::as_str);
    let from_producer = || {
        o.producer
            .as_ref()?
            .pointer("/spec/volumes")?
            .as_array()?
            .iter()
            .find_map(|v| v.pointer("/persistentVolumeClaim/claimName"))
            .and_then(Value::as_str)
    };
    from_snapshot.or_else(from_producer).map(String::from)
}

/// Immutable source changes roll forward. The shared claim `<dataset>` is filled by every
/// generation's producer; when the spec changes one of its immutable fields, applying it would
/// fail on every run. Instead the shared claim stops being rendered, each new generation fills
/// a fresh claim `<dataset>-<generation>` (rendered while its producer is), the serving
/// generation keeps serving from its snapshot, and the old claim is kept while a rendered
/// producer still uses it, then pruned. Once it is gone the next generation uses `<dataset>`
/// again, created with the new spec. Generations keep the claim they started with (a
/// snapshot's source is immutable), and an existing StatefulSet keeps its claim template's
/// storage (immutable too). Returns the datasets whose shared claim is not rendered.
pub(super) fn roll_source_forward(
    rollout: &Rollout,
    observed: &BTreeMap<String, Vec<Observed>>,
    sources: &BTreeMap<String, std::sync::Arc<Value>>,
    decisions: &mut [Decision],
) -> std::collections::BTreeSet<String> {
    let mut fresh = std::collections::BTreeSet::new();
    let empty = Vec::new();
    let index = super::decision_index(decisions);
    for d in &rollout.spec.datasets {
        let Some(&at) = index.get(&d.name) else {
            continue;
        };
        let decision = &mut decisions[at];
        let gens = observed.get(&d.name).unwrap_or(&empty);
        let change = sources.get(&d.name).and_then(|live| source_change(d, live));
        for plan in &mut decision.render {
            let seen = gens.iter().find(|o| o.id == plan.id);
            if plan.statefulset {
                plan.claim_storage = seen
                    .and_then(|o| o.statefulset.as_deref())
                    .and_then(claim_storage_of);
            }
            let used = seen.and_then(source_of);
            plan.source = match used {
                Some(c) if c != d.name => Some(c),
                Some(_) => None,
                // A generation starting now.
                None if change.is_some() => Some(format!("{}-{}", d.name, plan.id)),
                None => None,
            };
        }
        if let Some(what) = change {
            fresh.insert(d.name.clone());
            let still_used = decision
                .render
                .iter()
                .any(|p| p.producer && p.source.is_none());
            decision.notes.push(format!(
                "dataset {}: source claim {} cannot change in place ({what}); new generations fill a fresh claim {}-<generation>{}",
                d.name,
                d.name,
                d.name,
                if still_used {
                    format!("; {} stays while a producer uses it", d.name)
                } else {
                    format!("; {} is removed", d.name)
                }
            ));
            if still_used {
                decision.held_source = Some(d.name.clone());
            }
        }
    }
    fresh
}
