//! Unit tests of the renderer.

use super::*;

/// The shipped `examples/gke-daily` spec, loaded.
fn gke_daily() -> spec::Loaded {
    let path = format!(
        "{}/examples/gke-daily/snaproll.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    spec::load(Path::new(&path)).unwrap()
}

/// A live StatefulSet's claim storage replaces the spec's in its own generation only, with
/// or without a storage class (a claim template on the cluster's default class has none).
#[test]
fn claim_storage_of_a_live_statefulset_is_rendered_as_it_is() {
    let loaded = gke_daily();
    let r = &loaded.rollout;
    let d = &r.spec.datasets[0].name;
    for class in [None, Some("old-class".to_string())] {
        let mut frozen = GenerationPlan::full("2021-07-15");
        frozen.claim_storage = Some(ClaimStorage {
            storage_class_name: class.clone(),
            access_modes: vec!["ReadWriteOnce".into()],
            volume_mode: "Filesystem".into(),
            size: "7Gi".into(),
        });
        let plan = Plan {
            datasets: [(d.clone(), vec![frozen, GenerationPlan::full("2021-07-16")])]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let set = Renderer::new(None).unwrap().render(r, &plan).unwrap();
        let sts: Vec<&Value> = set
            .objects
            .iter()
            .filter(|o| o.id.kind == Kind::StatefulSet)
            .map(|o| &*o.value)
            .collect();
        let tmpl = |v: &Value| v.pointer("/spec/volumeClaimTemplates/0/spec").cloned();
        let old = tmpl(sts[0]).unwrap();
        assert_eq!(
            old.pointer("/resources/requests/storage"),
            Some(&json!("7Gi"))
        );
        assert_eq!(
            old.get("storageClassName").and_then(Value::as_str),
            class.as_deref()
        );
        let new = tmpl(sts[1]).unwrap();
        assert_ne!(
            new.pointer("/resources/requests/storage"),
            Some(&json!("7Gi"))
        );
    }
}

/// The shipped templates must render YAML that [`crate::yaml::from_str`] reads itself:
/// handing them to serde-saphyr doubles the cost of a large render.
#[test]
fn embedded_templates_render_yaml_the_fast_reader_reads() {
    for example in ["gke-daily", "eks", "multi"] {
        let path = format!(
            "{}/examples/{example}/snaproll.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let loaded = spec::load(Path::new(&path)).unwrap();
        let r = &loaded.rollout;
        let renderer = Renderer::new(None).unwrap();
        let shared = shared_values(r);
        let mut texts = Vec::new();
        let render = |kind: Kind, ctx: &Context| {
            renderer
                .env
                .get_template(kind.template())
                .unwrap()
                .render(&ctx.values)
                .unwrap()
        };
        texts.push(render(
            Kind::VolumeSnapshotClass,
            &class_context(r, &shared),
        ));
        for d in &r.spec.datasets {
            let own = dataset_values(d);
            let applyset = manifest::rollout_applyset_id(&r.metadata.name, &r.metadata.namespace);
            let layers = Layers {
                values: [&own, &shared],
                applyset: &applyset,
            };
            let base = dataset_context(r, d, None, &layers);
            let g = GenerationPlan::full("2021-07-15");
            let ctx = dataset_context(r, d, Some(&g), &layers);
            texts.push(render(Kind::PersistentVolumeClaim, &base));
            texts.push(render(Kind::Service, &base));
            for kind in [Kind::Pod, Kind::VolumeSnapshot, Kind::StatefulSet] {
                texts.push(render(kind, &ctx));
            }
        }
        for text in texts {
            let fast = crate::yaml::plain_document(&text);
            assert!(fast.is_some(), "{example}: not read directly:\n{text}");
            assert_eq!(
                fast.unwrap(),
                serde_saphyr::from_str::<Value>(&text).unwrap(),
                "{example}:\n{text}"
            );
        }
    }
}

/// Objects whose values have the same structure share a shape, so a large render parses
/// and round-trips a handful of objects, not one per object; the output is the full path's.
#[test]
fn objects_of_one_structure_share_a_shape() {
    let mut text = String::from(
        "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata: {name: r, namespace: n}\nspec:\n  snapshotClass: {name: c, driver: d.example.com}\n  datasets:\n",
    );
    for i in 0..50 {
        text.push_str(&format!(
            "    - name: data-{i}\n      storage: {{size: {}Gi}}\n      producer: {{image: busybox, args: [\"{i}\"]}}\n      consumer: {{name: c-{i}, image: nginx, replicas: {}, ports: [{{name: http, containerPort: {}}}]}}\n",
            i + 1,
            i % 3 + 1,
            8000 + i
        ));
    }
    let loaded = spec::parse_str("r.yaml", &text).unwrap();
    let plan = Plan::single(&loaded.rollout, "2021-07-15");
    let renderer = Renderer::new(None).unwrap();
    let fast = renderer.render(&loaded.rollout, &plan).unwrap();
    let shapes = renderer.shapes.as_ref().unwrap().len();
    assert_eq!(shapes, 6, "one shape per kind");
    let full = full_path_render(&loaded.rollout, &plan);
    assert_eq!(fast.files(), full.files());
}

/// A value that holds the slot marker text is never taken for a slot: its objects take the
/// full path and come out as the full path writes them.
#[test]
fn values_holding_the_slot_marker_render_as_the_full_path() {
    let mut text = String::from(
        "apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata: {name: r, namespace: n}\nspec:\n  snapshotClass: {name: c, driver: d.example.com}\n  datasets:\n",
    );
    for (i, arg) in [
        "__snaproll_slot_0__",
        "a_b__snaproll_slot_12__",
        "plain_arg",
        "x__snaproll_slot_",
    ]
    .iter()
    .enumerate()
    {
        text.push_str(&format!(
            "    - name: data-{i}\n      storage: {{size: 1Gi}}\n      producer: {{image: busybox, args: [\"{arg}\"]}}\n      consumer: {{name: c-{i}, image: nginx}}\n"
        ));
    }
    let loaded = spec::parse_str("r.yaml", &text).unwrap();
    let plan = Plan::single(&loaded.rollout, "2021-07-15");
    let fast = embedded_render(&loaded.rollout, &plan);
    let full = full_path_render(&loaded.rollout, &plan);
    assert_eq!(fast.files(), full.files());
    assert!(fast.to_yaml_stream().contains("a_b__snaproll_slot_12__"));
}

#[test]
fn text_only_render_writes_the_same_yaml_and_drops_values() {
    let path = format!(
        "{}/examples/multi/snaproll.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let loaded = spec::load(Path::new(&path)).unwrap();
    let plan = Plan::single(&loaded.rollout, "2021-07-15");
    let full = embedded_render(&loaded.rollout, &plan);
    let text = Renderer::new(None)
        .unwrap()
        .text_only()
        .render(&loaded.rollout, &plan)
        .unwrap();
    assert_eq!(full.files(), text.files());
    assert!(full.objects.iter().all(|o| o.value.is_object()));
    assert!(text.objects.iter().all(|o| o.value.is_null()));
}

/// The digest and the unchanged record of a plan are the snapshot's annotations (next to
/// the sync wave); a plan without them renders none of them.
#[test]
fn snapshot_records_the_plans_digest_and_unchanged_generation() {
    let loaded = gke_daily();
    let r = &loaded.rollout;
    let d = &r.spec.datasets[0].name;
    let mut recorded = GenerationPlan::full("2021-07-15");
    recorded.digest = Some("sha256:abc".into());
    recorded.unchanged = Some("2021-07-16".into());
    let plan = Plan {
        datasets: [(
            d.clone(),
            vec![recorded, GenerationPlan::full("2021-07-17")],
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let set = Renderer::new(None).unwrap().render(r, &plan).unwrap();
    let annotations: Vec<&Value> = set
        .objects
        .iter()
        .filter(|o| o.id.kind == Kind::VolumeSnapshot)
        .map(|o| &o.value["metadata"]["annotations"])
        .collect();
    let wave = Kind::VolumeSnapshot.sync_wave().to_string();
    assert_eq!(
        annotations,
        [
            &json!({"snaproll.dev/digest": "sha256:abc",
                    "snaproll.dev/unchanged": "2021-07-16",
                    manifest::ANNOTATION_SYNC_WAVE: wave}),
            &json!({ manifest::ANNOTATION_SYNC_WAVE: wave }),
        ]
    );
}

/// The embedded templates' render, on the fast path where it applies.
fn embedded_render(rollout: &spec::Rollout, plan: &Plan) -> RenderedSet {
    Renderer::new(None).unwrap().render(rollout, plan).unwrap()
}

/// The embedded templates' render with every object on the full path (the reference).
fn full_path_render(rollout: &spec::Rollout, plan: &Plan) -> RenderedSet {
    Renderer::new(None)
        .unwrap()
        .full_path()
        .render(rollout, plan)
        .unwrap()
}

/// The local layer reads, and prints as JSON, exactly as its serialisation did: every key,
/// value and order within its entries, with and without a generation, a live claim storage
/// and annotations.
#[test]
fn local_layer_is_its_serialisation() {
    let loaded = gke_daily();
    let r = &loaded.rollout;
    let d = &r.spec.datasets[0];
    let mut g = GenerationPlan::full("2021-07-15");
    g.digest = Some("sha256:00".into());
    g.claim_storage = Some(spec_claim_storage(d, "3Gi"));
    for (g, selects) in [(None, None), (None, Some("2021-07-14")), (Some(&g), None)] {
        let local = || local_layer(r, d, g, selects, "applyset-id");
        let ours =
            serde_json::to_value(minijinja::Value::from_object(local_value(local()))).unwrap();
        let serialised = serde_json::to_value(serde_value(local())).unwrap();
        assert_eq!(ours, serialised);
        // Each entry prints as it did (the order of the layer's own names cannot be read).
        for (name, value) in serialised.as_object().unwrap() {
            assert_eq!(ours[name].to_string(), value.to_string(), "{name}");
        }
        let env = minijinja::Environment::new();
        let read = |v: minijinja::Value| {
            env.render_str(
                "{{ names.pvc }} {{ labels.pvc | tojson }} {{ names.restore is defined }} {% if annotations.snapshot %}a{% endif %} {{ labels | length }} {{ generation is defined }} {{ storage is defined }}",
                v,
            )
            .unwrap()
        };
        assert_eq!(read(merged(&[], local())), read(serde_value(local())));
    }
}

/// The dataset layer's `storage` and `producer`, taken from its serialised dataset, are what
/// serialising each of them gives.
#[test]
fn dataset_layer_fields_are_their_serialisation() {
    let loaded = gke_daily();
    let d = &loaded.rollout.spec.datasets[0];
    let layer = dataset_values(d);
    let json = |v: &minijinja::Value| serde_json::to_value(v).unwrap().to_string();
    assert_eq!(json(&layer["storage"]), json(&serde_value(&d.storage)));
    assert_eq!(json(&layer["producer"]), json(&serde_value(&d.producer)));
}
