//! The template context: what each template sees, built in layers (see [`Context`]).

use super::*;

/// What a template sees. Documented in `docs/spec.md` ("Template context").
///
/// The context is built in three layers ([`merged`] into one map of shared values), so each
/// part is converted once: the rollout and class once per render ([`shared_values`]), the
/// dataset once per dataset ([`dataset_values`]), and only the names, labels and sizes once
/// per generation ([`Local`]). Converting the whole dataset for every template was a tenth of
/// a large render.
pub(super) struct Context {
    /// The dataset it belongs to (`None` for the shared VolumeSnapshotClass).
    pub(super) dataset: Option<String>,
    pub(super) generation: Option<String>,
    /// The merged minijinja value the templates see.
    pub(super) values: minijinja::Value,
}

impl Context {
    pub(super) fn dataset_name(&self) -> &str {
        self.dataset.as_deref().unwrap_or("-")
    }
}

/// One layer of a context: its top-level names and their values. The layer every template
/// shares ([`shared_values`]) and the layer of one dataset ([`dataset_values`]) are built once
/// and merged into each context with its [`Local`] layer.
pub(super) type Layer = BTreeMap<&'static str, minijinja::Value>;

/// The layer of one context: what differs between a dataset's shared objects and each
/// generation.
#[derive(Serialize)]
pub(super) struct Local {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) generation: Option<String>,
    /// A live StatefulSet's claim storage, in place of the dataset's (see
    /// [`GenerationPlan::claim_storage`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) storage: Option<ClaimStorage>,
    pub(super) names: BTreeMap<&'static str, String>,
    pub(super) labels: Labels,
    /// Annotations snaproll records on an object (the snapshot's digest and unchanged record:
    /// see [`GenerationPlan::digest`]); empty maps when there are none.
    pub(super) annotations: BTreeMap<&'static str, BTreeMap<String, String>>,
    pub(super) sizes: BTreeMap<&'static str, String>,
}

/// The layer every template shares: `rollout` (name, namespace) and `class`.
pub(super) fn shared_values(r: &Rollout) -> Layer {
    Layer::from([
        (
            "rollout",
            serde_value(json!({ "name": r.metadata.name, "namespace": r.metadata.namespace })),
        ),
        ("class", serde_value(&r.spec.snapshot_class)),
    ])
}

/// The layer of one dataset, shared by its generations: `dataset`, `storage`, `producer`
/// and `consumer`.
pub(super) fn dataset_values(d: &Dataset) -> Layer {
    let mut consumer = serde_json::to_value(&d.consumer).expect("spec serialises");
    // Kubernetes spells the service field `type` and the retention values as strings; the
    // serialised spec already does, but replicas must be a plain integer.
    consumer["replicas"] = json!(d.consumer.replicas);
    if let Some(v) = &d.consumer.verify {
        // The verify timeout, as the Job's deadline (a plain integer).
        consumer["verify"]["activeDeadlineSeconds"] = json!(v.timeout().as_secs());
    }
    // `storage` and `producer` as the dataset's own fields: serialised once, not twice.
    let dataset = serde_value(d);
    let field = |name: &str| {
        dataset
            .get_attr(name)
            .expect("a serialised dataset is a map of its fields")
    };
    Layer::from([
        ("storage", field("storage")),
        ("producer", field("producer")),
        ("dataset", dataset.clone()),
        ("consumer", serde_value(consumer)),
    ])
}

pub(super) fn serde_value(v: impl Serialize) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

/// The layers under a dataset context's local one, most specific first, and what every local
/// layer of the render repeats.
pub(super) struct Layers<'a> {
    pub(super) values: [&'a Layer; 2],
    /// The rollout's ApplySet id (see [`manifest::rollout_applyset_id`]), computed once per
    /// render: it is a SHA-256 that every member label set would otherwise recompute.
    pub(super) applyset: &'a str,
}

/// Layers given most specific first, `local` the most specific of all, merged into one map
/// (a name in a more specific layer hides the others'). One map instead of minijinja's
/// merged view, which looked each name up layer by layer on every read.
pub(super) fn merged(layers: &[&Layer], local: Local) -> minijinja::Value {
    let mut flat = Layer::new();
    for layer in layers.iter().rev() {
        flat.extend(layer.iter().map(|(k, v)| (*k, v.clone())));
    }
    flat.extend(local_value(local));
    minijinja::Value::from_object(flat)
}

/// The local layer as minijinja maps over its own Rust maps (moved, not copied), with the
/// same keys and values as its serialisation: serialising it copied every name and label
/// into minijinja values for each context (most of them never read), an eighth of a large
/// render, and looked keys up by comparing values.
pub(super) fn local_value(local: Local) -> Layer {
    use minijinja::Value;
    let by_key = |maps: BTreeMap<&'static str, BTreeMap<String, String>>| {
        Value::from_object(
            maps.into_iter()
                .map(|(k, m)| (k, Value::from_object(m)))
                .collect::<BTreeMap<&'static str, Value>>(),
        )
    };
    let mut layer = Layer::new();
    if let Some(generation) = local.generation {
        layer.insert("generation", Value::from(generation));
    }
    if let Some(storage) = local.storage {
        layer.insert("storage", serde_value(storage));
    }
    layer.insert("names", Value::from_object(local.names));
    layer.insert("labels", Value::from_object(local.labels));
    layer.insert("annotations", by_key(local.annotations));
    layer.insert("sizes", Value::from_object(local.sizes));
    layer
}

pub(super) fn class_context(r: &Rollout, shared: &Layer) -> Context {
    let mut labels = Labels {
        of: None,
        set: BTreeMap::new(),
    };
    labels.insert(
        "class",
        with(
            // Not an ApplySet member: a cluster-scoped class is shared by the rollouts of a
            // driver and never pruned.
            manifest::ownership_labels(&r.metadata.name, None, None),
            [(manifest::LABEL_COMPONENT, "snapshot-class")],
        ),
    );
    let local = Local {
        generation: None,
        storage: None,
        names: BTreeMap::from([("class", r.spec.snapshot_class.name.clone())]),
        labels,
        annotations: BTreeMap::new(),
        sizes: BTreeMap::new(),
    };
    Context {
        dataset: None,
        generation: None,
        values: merged(&[shared], local),
    }
}

pub(super) fn with<const N: usize>(
    mut labels: BTreeMap<String, String>,
    extra: [(&str, &str); N],
) -> BTreeMap<String, String> {
    for (k, v) in extra {
        labels.insert(k.to_string(), v.to_string());
    }
    labels
}

pub(super) fn dataset_context(
    r: &Rollout,
    d: &Dataset,
    g: Option<&GenerationPlan>,
    layers: &Layers,
) -> Context {
    dataset_context_with(r, d, g, None, layers)
}

/// [`dataset_context`], with the Service selecting only `selects`' pods when given
/// (`consumer.switch: atomic`).
pub(super) fn dataset_context_with(
    r: &Rollout,
    d: &Dataset,
    g: Option<&GenerationPlan>,
    selects: Option<&str>,
    layers: &Layers,
) -> Context {
    let local = local_layer(r, d, g, selects, layers.applyset);
    Context {
        dataset: Some(d.name.clone()),
        generation: local.generation.clone(),
        values: merged(&layers.values, local),
    }
}

/// The local layer of a dataset's context (see [`dataset_context_with`]).
pub(super) fn local_layer(
    r: &Rollout,
    d: &Dataset,
    g: Option<&GenerationPlan>,
    selects: Option<&str>,
    applyset: &str,
) -> Local {
    let gen_id = g.map(|g| g.id.as_str());
    let mut names = BTreeMap::from([
        ("class", r.spec.snapshot_class.name.clone()),
        ("pvc", d.name.clone()),
        ("service", d.consumer.name.clone()),
        ("claim", d.claim_name().to_string()),
        ("volume", "data".to_string()),
    ]);
    let labels = Labels {
        of: Some(LabelInputs {
            rollout: r.metadata.name.clone(),
            applyset: applyset.to_string(),
            dataset: d.name.clone(),
            consumer: d.consumer.name.clone(),
            generation: gen_id.map(str::to_string),
            selects: selects.map(str::to_string),
        }),
        set: BTreeMap::new(),
    };
    let mut sizes = BTreeMap::from([("claim", d.storage.size.clone())]);
    let mut annotations = BTreeMap::new();
    if let (Some(g), Some(id)) = (g, gen_id) {
        let recorded = [
            (manifest::ANNOTATION_DIGEST, &g.digest),
            (manifest::ANNOTATION_UNCHANGED, &g.unchanged),
            (manifest::ANNOTATION_VERIFY, &g.verified),
        ];
        annotations.insert(
            "snapshot",
            recorded
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.clone()?)))
                .collect(),
        );
        if let Some(source) = &g.source {
            names.insert("pvc", source.clone());
        }
        names.insert("producer", format!("{}-producer-{id}", d.name));
        names.insert("snapshot", format!("{}-{id}", d.name));
        names.insert("statefulset", format!("{}-{id}", d.consumer.name));
        names.insert("verify", format!("{}-{id}{}", d.name, spec::VERIFY_SUFFIX));
        if let Some(size) = &g.claim_size {
            sizes.insert("claim", size.clone());
        }
    }
    let storage = g.and_then(|g| g.claim_storage.clone());
    if let Some(st) = &storage {
        sizes.insert("claim", st.size.clone());
    }
    Local {
        generation: gen_id.map(str::to_string),
        storage,
        names,
        labels,
        annotations,
        sizes,
    }
}

/// The label sets of a context (`labels.pvc`, `labels.statefulset`, ...), each built when it
/// is read: a template reads one to four of a generation's twelve, and building all of them
/// for every context was a twentieth of a large render. Sets given with [`Labels::insert`]
/// (or changed through [`Labels::get_mut`]) replace the built ones.
#[derive(Debug)]
pub(super) struct Labels {
    /// What the built sets are made of (`None`: only the given sets).
    of: Option<LabelInputs>,
    set: BTreeMap<&'static str, BTreeMap<String, String>>,
}

#[derive(Debug)]
struct LabelInputs {
    rollout: String,
    applyset: String,
    dataset: String,
    consumer: String,
    generation: Option<String>,
    /// The generation the Service selects (`consumer.switch: atomic`).
    selects: Option<String>,
}

/// The sets of a dataset's context, and those a generation's adds.
const DATASET_SETS: &[&str] = &["pvc", "service", "serviceSelector"];
const GENERATION_SETS: &[&str] = &[
    "claim",
    "pod",
    "podSelector",
    "producer",
    "snapshot",
    "statefulset",
    "verify",
    "verifyClaim",
    "verifyPod",
];

impl Labels {
    /// The names of its sets, in order.
    fn keys(&self) -> BTreeSet<&'static str> {
        let mut keys: BTreeSet<&'static str> = self.set.keys().copied().collect();
        if let Some(of) = &self.of {
            keys.extend(DATASET_SETS);
            if of.generation.is_some() {
                keys.extend(GENERATION_SETS);
            }
        }
        keys
    }

    /// Set `key`, as given or built.
    pub(super) fn get(&self, key: &str) -> Option<BTreeMap<String, String>> {
        match self.set.get(key) {
            Some(set) => Some(set.clone()),
            None => self.build(key),
        }
    }

    pub(super) fn insert(&mut self, key: &'static str, set: BTreeMap<String, String>) {
        self.set.insert(key, set);
    }

    /// Set `key`, to change in place (built first when it was not given).
    pub(super) fn get_mut(&mut self, key: &'static str) -> Option<&mut BTreeMap<String, String>> {
        if !self.set.contains_key(key) {
            let built = self.build(key)?;
            self.set.insert(key, built);
        }
        self.set.get_mut(key)
    }

    /// Set `key` of the inputs (what `local_layer` put in every context before).
    fn build(&self, key: &str) -> Option<BTreeMap<String, String>> {
        let of = self.of.as_ref()?;
        let rollout = of.rollout.as_str();
        let dataset = Some(of.dataset.as_str());
        // Pods and PVCs made by the StatefulSet controller must not look like objects snaproll
        // applied (prune lists Pods and PVCs by the ownership labels): pod labels identify the
        // consumer only; claim-template labels carry ownership plus a component of their own so
        // the rollout can clean them up by label on clusters without a retention policy.
        let app = [
            ("app.kubernetes.io/name", of.consumer.as_str()),
            ("app.kubernetes.io/instance", rollout),
        ];
        let component = |generation: Option<&str>, component: &str| {
            let labels = member_labels(rollout, &of.applyset, dataset, generation);
            with(labels, [(manifest::LABEL_COMPONENT, component)])
        };
        match (key, of.generation.as_deref()) {
            ("pvc", _) => return Some(component(None, "source")),
            ("service", _) => return Some(component(None, "consumer")),
            ("serviceSelector", _) => {
                return Some(match &of.selects {
                    Some(generation) => with(
                        with(BTreeMap::new(), app),
                        [(manifest::LABEL_GENERATION, generation.as_str())],
                    ),
                    None => with(BTreeMap::new(), app),
                });
            }
            _ => {}
        }
        let id = of.generation.as_deref()?;
        Some(match key {
            "producer" => component(Some(id), "producer"),
            "snapshot" => component(Some(id), "snapshot"),
            "statefulset" => component(Some(id), "consumer"),
            "verify" => component(Some(id), "verify"),
            "verifyClaim" => component(Some(id), "verify-volume"),
            // The verify Job's Pod: not an object snaproll applies (no ownership labels, which
            // prune lists by), and not one the Service selects (another app name).
            "verifyPod" => with(
                BTreeMap::new(),
                [
                    ("app.kubernetes.io/name", "snaproll-verify"),
                    ("app.kubernetes.io/instance", rollout),
                    (manifest::LABEL_GENERATION, id),
                ],
            ),
            // Claims the StatefulSet controller makes from the template are not ApplySet
            // members: kubectl's ApplySet prune would delete every member it did not apply.
            "claim" => with(
                manifest::ownership_labels(rollout, dataset, Some(id)),
                [(manifest::LABEL_COMPONENT, "consumer-volume")],
            ),
            "pod" | "podSelector" => with(
                with(BTreeMap::new(), app),
                [(manifest::LABEL_GENERATION, id)],
            ),
            _ => return None,
        })
    }
}

impl minijinja::value::Object for Labels {
    fn get_value(self: &std::sync::Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        Some(minijinja::Value::from_object(self.get(key.as_str()?)?))
    }

    fn enumerate(self: &std::sync::Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Values(
            self.keys()
                .into_iter()
                .map(minijinja::Value::from)
                .collect(),
        )
    }
}

/// As the map of every set (what it serialised as before).
impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let keys = self.keys();
        let mut map = serializer.serialize_map(Some(keys.len()))?;
        for key in keys {
            map.serialize_entry(key, &self.get(key))?;
        }
        map.end()
    }
}

/// [`manifest::member_labels`] with the ApplySet id given.
fn member_labels(
    rollout: &str,
    applyset: &str,
    dataset: Option<&str>,
    generation: Option<&str>,
) -> BTreeMap<String, String> {
    let mut labels = manifest::ownership_labels(rollout, dataset, generation);
    labels.insert(manifest::LABEL_PART_OF.to_string(), applyset.to_string());
    labels
}

/// The name of snapshot copy `i` of a generation taking several (`snapshot.copies` > 1).
pub fn copy_name(d: &Dataset, generation: &str, i: u32) -> String {
    format!("{}-{generation}-{i}", d.name)
}

/// A generation's context with its local layer changed by `change` (a snapshot copy, a
/// consumer claim).
pub(super) fn with_local(
    r: &Rollout,
    d: &Dataset,
    g: &GenerationPlan,
    layers: &Layers,
    change: impl FnOnce(&mut Local),
) -> Context {
    let mut local = local_layer(r, d, Some(g), None, layers.applyset);
    change(&mut local);
    Context {
        dataset: Some(d.name.clone()),
        generation: local.generation.clone(),
        values: merged(&layers.values, local),
    }
}

/// The storage of a consumer claim: the claim template's (frozen or the spec's) at the claim
/// size.
pub(super) fn claim_storage(d: &Dataset, l: &Local) -> ClaimStorage {
    let size = l.sizes["claim"].clone();
    match &l.storage {
        Some(st) => ClaimStorage { size, ..st.clone() },
        None => spec_claim_storage(d, &size),
    }
}

/// The spec's storage of a dataset as a claim template's, at `size`.
pub fn spec_claim_storage(d: &Dataset, size: &str) -> ClaimStorage {
    ClaimStorage {
        storage_class_name: d.storage.storage_class_name.clone(),
        access_modes: d
            .storage
            .access_modes
            .iter()
            .filter_map(|m| serde_json::to_value(m).ok()?.as_str().map(str::to_string))
            .collect(),
        volume_mode: serde_json::to_value(d.storage.volume_mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "Filesystem".to_string()),
        size: size.to_string(),
    }
}
