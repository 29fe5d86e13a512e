//! Object identity, ownership labels and ordering of rendered manifests.
//!
//! Everything that decides *which* object something is (kind, namespace, name), how it is
//! labelled so that prune can recognise it, and in which order objects are applied lives here,
//! so that rendering, Git output and the cluster layer agree on one definition.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Label every snaproll object carries; prune never touches an object without it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "snaproll";
/// The rollout (spec `metadata.name`) an object belongs to.
pub const LABEL_ROLLOUT: &str = "snaproll.dev/rollout";
/// The dataset an object belongs to (absent on the shared VolumeSnapshotClass).
pub const LABEL_DATASET: &str = "snaproll.dev/dataset";
/// The generation an object belongs to (only on per-generation objects).
pub const LABEL_GENERATION: &str = "snaproll.dev/generation";
/// On each VolumeSnapshot of a generation that takes several (`snapshot.copies` > 1): how
/// many it takes. The count is frozen per generation, so a spec change never alters the
/// `dataSource` of a generation's (immutable) consumer claims.
pub const LABEL_COPIES: &str = "snaproll.dev/copies";
/// Role of the object inside a dataset (`source`, `producer`, `snapshot`, `service`, `consumer`).
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Argo CD sync wave: in pull mode Argo CD applies lower waves first and waits for them to be
/// healthy, which gives the same dependency order snaproll applies in.
pub const ANNOTATION_SYNC_WAVE: &str = "argocd.argoproj.io/sync-wave";
/// The digest the producer reported for the data a snapshot holds (its termination message):
/// recorded on the snapshot so a later run can tell unchanged data without the producer Pod.
pub const ANNOTATION_DIGEST: &str = "snaproll.dev/digest";
/// On the serving generation's snapshot: the newest generation skipped because its data was
/// unchanged, so the schedule does not start it again once its producer Pod is gone.
pub const ANNOTATION_UNCHANGED: &str = "snaproll.dev/unchanged";
/// On a generation's snapshot: the outcome of its verify Job (`consumer.verify`), `passed` or
/// `failed: <message>`, recorded in the apply that prunes the Job, so the outcome survives it.
pub const ANNOTATION_VERIFY: &str = "snaproll.dev/verify";
/// Field manager used for server-side apply.
pub const FIELD_MANAGER: &str = "snaproll";

/// The kinds snaproll renders, declared in dependency (apply) order: the derived `Ord` *is*
/// the apply order, so sorting objects by kind can never disagree with the documented order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    VolumeSnapshotClass,
    PersistentVolumeClaim,
    Pod,
    VolumeSnapshot,
    Service,
    StatefulSet,
    /// A generation's verify Job (`consumer.verify`). Last in apply order so every earlier
    /// kind keeps its file-name prefix; it is never rendered beside its generation's
    /// StatefulSet, and in pull mode its sync wave puts it before the StatefulSet.
    Job,
}

impl Kind {
    /// Every kind, in apply order.
    pub const ALL: [Kind; 7] = [
        Kind::VolumeSnapshotClass,
        Kind::PersistentVolumeClaim,
        Kind::Pod,
        Kind::VolumeSnapshot,
        Kind::Service,
        Kind::StatefulSet,
        Kind::Job,
    ];

    /// The `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VolumeSnapshotClass => "VolumeSnapshotClass",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::Pod => "Pod",
            Kind::VolumeSnapshot => "VolumeSnapshot",
            Kind::Service => "Service",
            Kind::StatefulSet => "StatefulSet",
            Kind::Job => "Job",
        }
    }

    /// Parses a `kind` field value.
    pub fn from_kind(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// API group ("" for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::VolumeSnapshotClass | Kind::VolumeSnapshot => "snapshot.storage.k8s.io",
            Kind::StatefulSet => "apps",
            Kind::Job => "batch",
            Kind::PersistentVolumeClaim | Kind::Pod | Kind::Service => "",
        }
    }

    /// API version within the group.
    pub fn version(self) -> &'static str {
        "v1"
    }

    /// The `apiVersion` field.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::VolumeSnapshotClass | Kind::VolumeSnapshot => "snapshot.storage.k8s.io/v1",
            Kind::StatefulSet => "apps/v1",
            Kind::Job => "batch/v1",
            Kind::PersistentVolumeClaim | Kind::Pod | Kind::Service => "v1",
        }
    }

    /// Resource name used in API paths.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::VolumeSnapshotClass => "volumesnapshotclasses",
            Kind::PersistentVolumeClaim => "persistentvolumeclaims",
            Kind::Pod => "pods",
            Kind::VolumeSnapshot => "volumesnapshots",
            Kind::Service => "services",
            Kind::StatefulSet => "statefulsets",
            Kind::Job => "jobs",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::VolumeSnapshotClass)
    }

    /// Name of the template that renders this kind (`templates/<name>.yaml.j2`).
    pub fn template(self) -> &'static str {
        match self {
            Kind::VolumeSnapshotClass => "volumesnapshotclass.yaml.j2",
            Kind::PersistentVolumeClaim => "persistentvolumeclaim.yaml.j2",
            Kind::Pod => "pod.yaml.j2",
            Kind::VolumeSnapshot => "volumesnapshot.yaml.j2",
            Kind::Service => "service.yaml.j2",
            Kind::StatefulSet => "statefulset.yaml.j2",
            Kind::Job => "job.yaml.j2",
        }
    }

    /// Lower-case kind, used in file names and messages.
    pub fn lower(self) -> &'static str {
        match self {
            Kind::VolumeSnapshotClass => "volumesnapshotclass",
            Kind::PersistentVolumeClaim => "persistentvolumeclaim",
            Kind::Pod => "pod",
            Kind::VolumeSnapshot => "volumesnapshot",
            Kind::Service => "service",
            Kind::StatefulSet => "statefulset",
            Kind::Job => "job",
        }
    }

    /// Position in apply order (0-based); prune walks the reverse.
    pub fn order(self) -> usize {
        self as usize
    }

    /// Argo CD sync wave. The PVC shares the producer's wave: with `WaitForFirstConsumer`
    /// storage it stays Pending until the producer is scheduled, and a wave of its own would
    /// never turn healthy.
    pub fn sync_wave(self) -> usize {
        match self {
            Kind::VolumeSnapshotClass => 0,
            Kind::PersistentVolumeClaim | Kind::Pod => 1,
            Kind::VolumeSnapshot => 2,
            // The verify Job (and its claim) before the StatefulSet: Argo CD waits for the
            // Job to complete before the next wave.
            Kind::Service | Kind::Job => 3,
            Kind::StatefulSet => 4,
        }
    }

    /// `Kind.group` as ApplySet's `contains-group-kinds` annotation spells it (`Kind` alone for
    /// the core group, as kubectl writes it).
    pub fn group_kind(self) -> String {
        if self.group().is_empty() {
            self.as_str().to_string()
        } else {
            format!("{}.{}", self.as_str(), self.group())
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of an object: what the API server keys it by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    pub kind: Kind,
    /// `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: Kind, namespace: Option<&str>, name: &str) -> Self {
        ObjectRef {
            kind,
            namespace: if kind.namespaced() {
                namespace.map(str::to_string)
            } else {
                None
            },
            name: name.to_string(),
        }
    }

    /// The identity of a manifest: its `kind` (one snaproll renders), `metadata.namespace` and
    /// `metadata.name`; `None` for any other kind or a manifest without a name.
    pub fn from_value(v: &serde_json::Value) -> Option<ObjectRef> {
        let field = |p: &str| v.pointer(p).and_then(serde_json::Value::as_str);
        let kind = field("/kind").and_then(Kind::from_kind)?;
        let name = field("/metadata/name").filter(|n| !n.is_empty())?;
        Some(ObjectRef::new(kind, field("/metadata/namespace"), name))
    }

    /// File name under `render --out` and the Git path: `<order>-<kind>-<name>.yaml`, so a plain
    /// `ls` lists objects in apply order and every name is unique within one rollout (one
    /// namespace per rollout; names are unique per kind).
    pub fn file_name(&self) -> String {
        format!(
            "{:02}-{}-{}.yaml",
            (self.kind.order() + 1) * 10,
            self.kind.lower(),
            self.name
        )
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{} ({})", self.kind, self.name, ns),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// One rendered, validated object.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub id: ObjectRef,
    /// The dataset it belongs to (`None` for the shared VolumeSnapshotClass).
    pub dataset: Option<String>,
    /// The generation it belongs to (`None` for objects shared across generations).
    pub generation: Option<String>,
    /// The object as JSON, in the key order the template wrote it (`Null` when rendered by a
    /// [`crate::render::Renderer::text_only`] renderer). Shared, so that an offline run's
    /// second decision can observe the rendered objects without copying them.
    pub value: std::sync::Arc<serde_json::Value>,
    /// Canonical YAML of `value`: what is written to files and Git.
    pub yaml: String,
}

impl Object {
    /// Labels of the object (empty when it has none).
    pub fn labels(&self) -> BTreeMap<String, String> {
        labels_of(&self.value)
    }
}

/// The labels of a JSON object, borrowed: what the observation of thousands of objects reads
/// (a [`labels_of`] map copies every key and value of every object).
#[derive(Clone, Copy)]
pub struct Labels<'a>(Option<&'a serde_json::Map<String, serde_json::Value>>);

impl<'a> Labels<'a> {
    /// The labels of `value` (none when absent or malformed).
    pub fn of(value: &'a serde_json::Value) -> Self {
        Labels(
            value
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(serde_json::Value::as_object),
        )
    }

    /// The value of label `key`, when it is a string.
    pub fn get(self, key: &str) -> Option<&'a str> {
        self.0?.get(key)?.as_str()
    }
}

/// Reading one label: what [`is_owned_by`] and [`is_member`] need, from a copied label map or
/// from a [`Labels`] view.
pub trait LabelLookup {
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelLookup for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl LabelLookup for Labels<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

/// Labels of a JSON object (empty when absent or malformed).
pub fn labels_of(value: &serde_json::Value) -> BTreeMap<String, String> {
    value
        .pointer("/metadata/labels")
        .and_then(|l| l.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The ownership labels of an object of `rollout`, optionally scoped to a dataset and generation.
pub fn ownership_labels(
    rollout: &str,
    dataset: Option<&str>,
    generation: Option<&str>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string());
    labels.insert(LABEL_ROLLOUT.to_string(), rollout.to_string());
    if let Some(d) = dataset {
        labels.insert(LABEL_DATASET.to_string(), d.to_string());
    }
    if let Some(g) = generation {
        labels.insert(LABEL_GENERATION.to_string(), g.to_string());
    }
    labels
}

/// Label on every member of an ApplySet naming the set's id (KEP-3659).
pub const LABEL_PART_OF: &str = "applyset.kubernetes.io/part-of";

/// kubectl's ApplySet id: `applyset-<base64url-no-pad(sha256("<name>.<namespace>.<Kind>.<group>"))>-v1`.
pub fn applyset_id(name: &str, namespace: &str, kind: &str, group: &str) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{name}.{namespace}.{kind}.{group}").as_bytes(),
    );
    format!(
        "applyset-{}-v1",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
    )
}

/// The id of rollout `rollout`'s ApplySet, whose parent is the ConfigMap `snaproll-<rollout>`
/// in the rollout's namespace. Rendered objects carry it as [`LABEL_PART_OF`], so objects
/// applied from Git by Argo CD or Flux are members too.
pub fn rollout_applyset_id(rollout: &str, namespace: &str) -> String {
    applyset_id(&format!("snaproll-{rollout}"), namespace, "ConfigMap", "")
}

/// The labels a rendered object of `rollout` carries: ownership plus ApplySet membership.
pub fn member_labels(
    rollout: &str,
    namespace: &str,
    dataset: Option<&str>,
    generation: Option<&str>,
) -> BTreeMap<String, String> {
    let mut labels = ownership_labels(rollout, dataset, generation);
    labels.insert(
        LABEL_PART_OF.to_string(),
        rollout_applyset_id(rollout, namespace),
    );
    labels
}

/// Whether an object with `labels` is a member of the rollout's ApplySet: it carries the
/// ownership labels *and* the set's `part-of` id. Labels alone prove nothing (anyone can copy
/// them); an object with the ownership labels but another or no `part-of` is a look-alike:
/// reported, never adopted, counted, served or deleted. The one exception: the claims the
/// StatefulSet controller makes from a claim template carry no `part-of` (kubectl's ApplySet
/// prune would delete members it did not apply); they count by their labels, and another
/// ApplySet's `part-of` still excludes them.
pub fn is_member(labels: &impl LabelLookup, rollout: &str, applyset_id: &str) -> bool {
    if !is_owned_by(labels, rollout) {
        return false;
    }
    match labels.label(LABEL_PART_OF) {
        Some(id) => id == applyset_id,
        None => labels.label(LABEL_COMPONENT) == Some("consumer-volume"),
    }
}

/// Label selector matching every object of a rollout: what LIST and prune use.
pub fn rollout_selector(rollout: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ROLLOUT}={rollout}")
}

/// Label selector of the consumer PVCs of one generation of one dataset.
pub fn consumer_volume_selector(rollout: &str, dataset: &str, generation: &str) -> String {
    format!(
        "{},{}={dataset},{}={generation},{}=consumer-volume",
        rollout_selector(rollout),
        LABEL_DATASET,
        LABEL_GENERATION,
        LABEL_COMPONENT
    )
}

/// Whether `labels` mark an object as owned by snaproll's rollout `rollout`.
pub fn is_owned_by(labels: &impl LabelLookup, rollout: &str) -> bool {
    labels.label(LABEL_MANAGED_BY) == Some(MANAGED_BY)
        && labels.label(LABEL_ROLLOUT) == Some(rollout)
}

/// Sorts objects into apply order: kind, then namespace, then name. Stable and total, so the
/// same set always comes out in the same order.
pub fn sort_for_apply(objects: &mut [Object]) {
    objects.sort_by(|a, b| a.id.cmp(&b.id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_order_is_dependency_order() {
        let mut kinds = Kind::ALL.to_vec();
        kinds.sort();
        assert_eq!(kinds, Kind::ALL.to_vec());
        assert_eq!(Kind::VolumeSnapshotClass.order(), 0);
        assert_eq!(Kind::StatefulSet.order(), 5);
    }

    #[test]
    fn file_names_sort_in_apply_order() {
        let a = ObjectRef::new(Kind::PersistentVolumeClaim, Some("ns"), "zz").file_name();
        let b = ObjectRef::new(Kind::StatefulSet, Some("ns"), "aa").file_name();
        assert_eq!(a, "20-persistentvolumeclaim-zz.yaml");
        assert!(a < b);
    }

    #[test]
    fn cluster_scoped_refs_drop_the_namespace() {
        let r = ObjectRef::new(Kind::VolumeSnapshotClass, Some("ns"), "c");
        assert_eq!(r.namespace, None);
        assert_eq!(r.to_string(), "VolumeSnapshotClass/c");
    }

    #[test]
    fn ownership_requires_both_labels() {
        let l = ownership_labels("r", Some("d"), None);
        assert!(is_owned_by(&l, "r"));
        assert!(!is_owned_by(&l, "other"));
        let mut foreign = l.clone();
        foreign.remove(LABEL_MANAGED_BY);
        assert!(!is_owned_by(&foreign, "r"));
    }

    #[test]
    fn consumer_volume_selector_scopes_to_one_generation() {
        assert_eq!(
            consumer_volume_selector("demo", "data", "2021-07-15"),
            "app.kubernetes.io/managed-by=snaproll,snaproll.dev/rollout=demo,snaproll.dev/dataset=data,snaproll.dev/generation=2021-07-15,app.kubernetes.io/component=consumer-volume"
        );
    }
}
