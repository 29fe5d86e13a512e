//! Reading the live state: the ApplySet parent (one GET) and the owned objects (one LIST per
//! kind and namespace, by the ownership label selector).

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;

use super::{ApplyError, CONCURRENCY, Manager, Verb, api_resource, applyset};
use crate::manifest::{self, Kind, ObjectRef};
use crate::render::RenderedSet;

/// The owned live objects of a rollout, read with one LIST per kind and namespace.
#[derive(Clone, Debug, Default)]
pub struct LiveState {
    /// Every object carrying the rollout's ownership labels, keyed by identity. Includes
    /// objects that are not ApplySet members (PVCs created by the StatefulSet controller).
    pub objects: BTreeMap<ObjectRef, Value>,
    /// The ApplySet parent, when it exists.
    pub parent: Option<Value>,
    /// What was read (a kind in a namespace, or a cluster-scoped object by name), so a later
    /// step of the same run reads only what is missing.
    pub(super) read: BTreeSet<(Kind, String)>,
}

impl LiveState {
    pub fn get(&self, id: &ObjectRef) -> Option<&Value> {
        self.objects.get(id)
    }

    /// Live objects of one kind.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&ObjectRef, &Value)> {
        self.objects.iter().filter(move |(id, _)| id.kind == kind)
    }
}

impl Manager {
    pub(super) fn api(&self, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = api_resource(kind);
        match (kind.namespaced(), namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (true, None) => Api::namespaced_with(self.client.clone(), &self.namespace, &ar),
            (false, _) => Api::all_with(self.client.clone(), &ar),
        }
    }

    pub(super) fn parent_api(&self) -> Api<DynamicObject> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("", "v1", "ConfigMap"),
            "configmaps",
        );
        Api::namespaced_with(self.client.clone(), &self.set.namespace, &ar)
    }

    /// Reads the ApplySet parent and every owned namespaced object: one GET, then one LIST
    /// per namespaced kind and namespace (the rollout's namespace, `extra_namespaces` and those
    /// the parent records), filtered by the ownership label selector. This is what the rollout
    /// reads statuses from (producer Pod phase, snapshot `readyToUse`, StatefulSet status).
    pub async fn live(&self, extra_namespaces: &BTreeSet<String>) -> Result<LiveState, ApplyError> {
        self.live_of(extra_namespaces, None, None).await
    }

    /// Reads the live state, skipping what `known` (read earlier this run) already holds.
    pub(super) async fn live_of(
        &self,
        extra_namespaces: &BTreeSet<String>,
        set: Option<&RenderedSet>,
        known: Option<LiveState>,
    ) -> Result<LiveState, ApplyError> {
        let parent = match &known {
            Some(k) => k.parent.clone(),
            None => self.read_parent().await?,
        };
        let kinds: Vec<Kind> = match set {
            None => Kind::ALL.to_vec(),
            Some(set) => {
                let recorded = parent
                    .as_ref()
                    .map(|p| applyset::annotation_set(p, applyset::ANNOTATION_GROUP_KINDS))
                    .unwrap_or_default();
                Kind::ALL
                    .into_iter()
                    .filter(|k| {
                        recorded.contains(&k.group_kind())
                            || set.objects.iter().any(|o| o.id.kind == *k)
                    })
                    .collect()
            }
        };
        let mut namespaces: BTreeSet<String> = extra_namespaces.clone();
        namespaces.insert(self.namespace.clone());
        if let Some(p) = &parent {
            namespaces.extend(applyset::annotation_set(p, applyset::ANNOTATION_NAMESPACES));
        }
        let selector = manifest::rollout_selector(&self.rollout);
        // Namespaced kinds: one LIST per kind and namespace. Cluster-scoped ones (the
        // VolumeSnapshotClass): a GET of each rendered name, which RBAC can limit to those
        // names where a cluster-wide LIST could not be; they are therefore never pruned.
        let mut jobs: Vec<(Kind, Option<String>, Option<String>)> = Vec::new();
        for kind in kinds {
            if kind.namespaced() {
                for ns in &namespaces {
                    jobs.push((kind, Some(ns.clone()), None));
                }
            } else if let Some(set) = set {
                for o in set.objects.iter().filter(|o| o.id.kind == kind) {
                    jobs.push((kind, None, Some(o.id.name.clone())));
                }
            }
        }
        let mut state = known.unwrap_or_default();
        let key = |kind: Kind, ns: &Option<String>, name: &Option<String>| {
            (
                kind,
                ns.clone().or_else(|| name.clone()).unwrap_or_default(),
            )
        };
        jobs.retain(|(kind, ns, name)| !state.read.contains(&key(*kind, ns, name)));
        state
            .read
            .extend(jobs.iter().map(|(kind, ns, name)| key(*kind, ns, name)));
        let results = futures::stream::iter(jobs.into_iter().map(|(kind, ns, name)| {
            let selector = selector.clone();
            async move {
                let api = self.api(kind, ns.as_deref());
                let listed = match &name {
                    Some(name) => self
                        .call(Verb::Get, || api.get_opt(name))
                        .await
                        .map(|o| o.into_iter().collect::<Vec<_>>()),
                    None => {
                        let lp = ListParams::default().labels(&selector);
                        self.call(Verb::List, || api.list(&lp))
                            .await
                            .map(|l| l.items)
                    }
                };
                let items = listed.map_err(|source| {
                    if source.is_not_found() {
                        return ApplyError::NotServed {
                            kind: kind.as_str().to_string(),
                            api_version: kind.api_version().to_string(),
                            source,
                        };
                    }
                    ApplyError::List {
                        kind: kind.as_str().to_string(),
                        scope: match (&ns, &name) {
                            (Some(n), _) => format!("namespace {n}"),
                            (None, Some(name)) => format!("the cluster (name {name})"),
                            (None, None) => "the cluster".to_string(),
                        },
                        source,
                    }
                })?;
                Ok::<_, ApplyError>((kind, items))
            }
        }))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
        let objects = &mut state.objects;
        for r in results {
            let (kind, items) = r?;
            for item in items {
                let mut v = serde_json::to_value(&item).unwrap_or(Value::Null);
                // LIST items come without apiVersion and kind from a real API server.
                v["apiVersion"] = Value::from(kind.api_version());
                v["kind"] = Value::from(kind.as_str());
                let id = ObjectRef::new(
                    kind,
                    item.metadata.namespace.as_deref(),
                    item.metadata.name.as_deref().unwrap_or_default(),
                );
                objects.insert(id, v);
            }
        }
        state.parent = parent;
        Ok(state)
    }

    async fn read_parent(&self) -> Result<Option<Value>, ApplyError> {
        let api = self.parent_api();
        let got = self
            .call(Verb::Get, || api.get_opt(&self.set.name))
            .await
            .map_err(|source| ApplyError::Parent {
                object: self.set.display(),
                source,
            })?;
        let Some(obj) = got else {
            return Ok(None);
        };
        let v = serde_json::to_value(&obj).unwrap_or(Value::Null);
        let labels = manifest::labels_of(&v);
        if labels.get(applyset::LABEL_ID) != Some(&self.set.id) {
            return Err(ApplyError::ForeignParent {
                object: self.set.display(),
                reason: format!("its {} label is not {}", applyset::LABEL_ID, self.set.id),
            });
        }
        let tooling = v
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(applyset::ANNOTATION_TOOLING))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !tooling.starts_with("snaproll/") {
            return Err(ApplyError::ForeignParent {
                object: self.set.display(),
                reason: format!("it is managed by `{tooling}`"),
            });
        }
        Ok(Some(v))
    }

    pub(super) fn namespaces_of(set: &RenderedSet) -> BTreeSet<String> {
        set.objects
            .iter()
            .filter_map(|o| o.id.namespace.clone())
            .collect()
    }

    /// Every owned consumer PVC (label `app.kubernetes.io/component=consumer-volume`), from
    /// the live state, plus one LIST per namespace whose PVCs this run has not read yet
    /// (a set that no longer renders a PVC of its own).
    pub(super) async fn consumer_claims(
        &self,
        live: &LiveState,
    ) -> Result<Vec<(ObjectRef, Value)>, ApplyError> {
        let mut namespaces: BTreeSet<String> = live
            .read
            .iter()
            .filter(|(k, _)| k.namespaced())
            .map(|(_, ns)| ns.clone())
            .collect();
        namespaces.insert(self.namespace.clone());
        let mut out: BTreeMap<ObjectRef, Value> = live
            .of_kind(Kind::PersistentVolumeClaim)
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect();
        let selector = manifest::rollout_selector(&self.rollout);
        for ns in namespaces {
            if live
                .read
                .contains(&(Kind::PersistentVolumeClaim, ns.clone()))
            {
                continue;
            }
            let api = self.api(Kind::PersistentVolumeClaim, Some(&ns));
            let lp = ListParams::default().labels(&selector);
            let list = self
                .call(Verb::List, || api.list(&lp))
                .await
                .map_err(|source| ApplyError::List {
                    kind: Kind::PersistentVolumeClaim.as_str().to_string(),
                    scope: format!("namespace {ns}"),
                    source,
                })?;
            for item in list.items {
                let mut v = serde_json::to_value(&item).unwrap_or(Value::Null);
                v["apiVersion"] = Value::from("v1");
                v["kind"] = Value::from(Kind::PersistentVolumeClaim.as_str());
                let id = ObjectRef::new(
                    Kind::PersistentVolumeClaim,
                    item.metadata.namespace.as_deref(),
                    item.metadata.name.as_deref().unwrap_or_default(),
                );
                out.insert(id, v);
            }
        }
        Ok(out
            .into_iter()
            .filter(|(_, v)| {
                let l = manifest::labels_of(v);
                manifest::is_member(&l, &self.rollout, &self.set.id)
                    && l.get(manifest::LABEL_COMPONENT).map(String::as_str)
                        == Some("consumer-volume")
            })
            .collect())
    }
}
