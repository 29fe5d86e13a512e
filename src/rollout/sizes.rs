//! How large a generation's claims must be: what the decision and the atomic switch's hold
//! both need (a module of its own, so neither imports the other for it).

use serde_json::Value;

use super::Observed;
use crate::spec::{self, Dataset};

/// The restoreSize of a generation's snapshot: the largest among its copies, so every claim
/// (whichever copy it restores from) requests enough. `None` until every copy reports one.
pub(super) fn restore_size(o: &Observed) -> Option<String> {
    restore_size_of(o.snapshot_copies())
}

/// [`restore_size`] of the given snapshot copies.
pub(super) fn restore_size_of<'a>(copies: impl IntoIterator<Item = &'a Value>) -> Option<String> {
    let mut best: Option<(spec::quantity::Quantity, String)> = None;
    for snap in copies {
        let size = snap.pointer("/status/restoreSize").and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })?;
        let Ok(q) = spec::quantity::parse(&size) else {
            return Some(size);
        };
        if best.as_ref().is_none_or(|(b, _)| q > *b) {
            best = Some((q, size));
        }
    }
    best.map(|(_, s)| s)
}

/// The claim size for a StatefulSet restoring from a snapshot: at least the snapshot's
/// `restoreSize` (a smaller request is rejected by the provisioner).
pub(super) fn claim_size(d: &Dataset, restore: &Option<String>) -> Option<String> {
    let restore = restore.as_ref()?;
    let want = spec::quantity::parse(&d.storage.size).ok()?;
    let have = spec::quantity::parse(restore).ok()?;
    (have > want).then(|| restore.clone())
}
