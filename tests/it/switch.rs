//! `consumer.switch: atomic`: the Service selects one generation, moves to the next in one
//! apply once that one is ready, and the old generation retires only after the switch.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::common::*;
use crate::lifecycle::{
    D1, D2, D3, G1, G2, G3, Knobs, Mode, Run, STS, SVCS, World, str_of, sts_ready,
};

/// The switch invariants over what the cluster holds, after every step of every lifecycle and
/// model test (called from `World::check_invariants`): a Service selecting one generation
/// selects one with a StatefulSet; it only ever moves to a ready one; and the generation it
/// moved away from still had its StatefulSet when it moved (it retires after the switch).
pub(crate) fn check_service(w: &World, when: &str) {
    if w.mode == Mode::Offline {
        return;
    }
    let stss = w.items(STS);
    let sts = |service: &str, g: &str| {
        stss.iter()
            .find(|s| str_of(&s["metadata"]["name"]) == format!("{service}-{g}"))
    };
    let mut last = w.selects.borrow_mut();
    for svc in w.items(SVCS) {
        let (Some(dataset), Some(g)) = (
            svc.pointer("/metadata/labels/snaproll.dev~1dataset")
                .and_then(Value::as_str),
            svc.pointer("/spec/selector/snaproll.dev~1generation")
                .and_then(Value::as_str),
        ) else {
            continue;
        };
        let service = str_of(&svc["metadata"]["name"]);
        let Some(now) = sts(&service, g) else {
            panic!("{when}: Service {service} selects generation {g}, which has no StatefulSet");
        };
        if let Some(before) = last.get(dataset)
            && before != g
        {
            assert!(
                sts_ready(now),
                "{when}: Service {service} switched to generation {g} before it was ready"
            );
            assert!(
                sts(&service, before).is_some(),
                "{when}: the StatefulSet of {before} went in the run that switched Service {service} away from it"
            );
        }
        last.insert(dataset.to_string(), g.to_string());
    }
}

fn atomic() -> Knobs {
    Knobs {
        atomic: true,
        ..Knobs::default()
    }
}

/// The generation the live Service `consumer` selects, if it selects one.
fn selects(w: &World) -> Option<String> {
    w.items(SVCS)
        .iter()
        .find(|s| str_of(&s["metadata"]["name"]) == "consumer")
        .and_then(|s| {
            s.pointer("/spec/selector/snaproll.dev~1generation")
                .map(str_of)
        })
}

fn sts_names(w: &World) -> Vec<String> {
    let mut names: Vec<String> = w
        .items(STS)
        .iter()
        .map(|s| str_of(&s["metadata"]["name"]))
        .collect();
    names.sort();
    names
}

/// What the run's report says of the Service of dataset `data`.
fn service_of(run: &Run) -> Value {
    run.report["generations"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["dataset"] == "data"))
        .map(|d| d["service"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn atomic_switch_moves_the_service_once_the_new_generation_is_ready_and_retires_the_old_after() {
    let w = World::new(Mode::Push, atomic());
    w.settle(D1, 12);
    assert_eq!(selects(&w).as_deref(), Some(G1));
    let svc = w
        .items(SVCS)
        .into_iter()
        .find(|s| str_of(&s["metadata"]["name"]) == "consumer")
        .unwrap();
    assert_eq!(
        svc["spec"]["selector"],
        json!({
            "app.kubernetes.io/instance": "demo",
            "app.kubernetes.io/name": "consumer",
            "snaproll.dev/generation": G1,
        })
    );

    // Day 2: while the new generation is introduced, the Service stays on the old one.
    let mut runs = Vec::new();
    for _ in 0..12 {
        let run = w.run(D2);
        let states = run.states("data");
        runs.push((states.clone(), selects(&w), sts_names(&w), run));
        if states == [format!("{G2} serving")] {
            break;
        }
        w.play();
    }
    let switched = runs
        .iter()
        .position(|(_, s, _, _)| s.as_deref() == Some(G2))
        .expect("the Service switched to the new generation");
    for (states, s, _, _) in &runs[..switched] {
        assert_eq!(s.as_deref(), Some(G1), "{states:?}");
    }
    // The switch run: the new generation serves, the old one's StatefulSet is still there and
    // says why; the JSON names both ends of the switch.
    let (states, _, stss, run) = &runs[switched];
    assert_eq!(
        states,
        &[format!("{G1} retiring"), format!("{G2} serving")],
        "{}",
        run.stdout
    );
    assert_eq!(
        stss,
        &[format!("consumer-{G1}"), format!("consumer-{G2}")],
        "the old StatefulSet retires only after the switch"
    );
    assert_eq!(service_of(run), json!({"selects": G1, "next": G2}));
    assert_eq!(
        run.detail("data", G1),
        format!(
            "the Service still selects it; switches to {G2} now, and it retires on the next run"
        )
    );
    // The next run sees the Service on the new generation: the old StatefulSet goes.
    let (_, _, stss, run) = &runs[switched + 1];
    assert_eq!(stss, &[format!("consumer-{G2}")], "{}", run.stdout);
    assert_eq!(service_of(run), json!({"selects": G2, "next": G2}));
    w.quiet(D2);

    // status says which generation the Service selects.
    let out = snaproll()
        .env("HOME", w.tmp.path())
        .args(["status", "-f"])
        .arg(&w.spec)
        .arg("--kubeconfig")
        .arg(&w.kubeconfig)
        .args(["--now", D2])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.contains(" service "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.ends_with(&format!("the Service selects generation {G2} only")),
        "{row}"
    );
    let (_, json, _) = w.status(D2);
    let data = json
        .as_array()
        .or_else(|| json["decisions"].as_array())
        .and_then(|ds| ds.iter().find(|d| d["dataset"] == "data").cloned())
        .unwrap();
    assert_eq!(data["service"], json!({"selects": G2, "next": G2}));
}

#[test]
fn atomic_switch_in_pull_mode_keeps_every_invariant_over_three_days() {
    // Argo CD (played) applies what Git holds; the switch invariants are checked after every
    // run and every sync by `check_service`.
    let w = World::new(Mode::Pull, atomic());
    for (day, g) in [(D1, G1), (D2, G2), (D3, G3)] {
        let r = w.settle(day, 14);
        assert_eq!(r.states("data"), [format!("{g} serving")]);
        assert_eq!(selects(&w).as_deref(), Some(g));
    }
}

#[test]
fn atomic_switch_in_a_rollback_moves_back_in_one_apply() {
    let w = World::new(
        Mode::Push,
        Knobs {
            keep: 2,
            ..atomic()
        },
    );
    w.settle(D1, 12);
    w.settle(D2, 14);
    assert_eq!(selects(&w).as_deref(), Some(G2));
    w.set_knobs(|k| k.pin = Some(G1));
    let r = w.settle(D2, 14);
    assert_eq!(r.states("data")[0], format!("{G1} serving"));
    assert_eq!(selects(&w).as_deref(), Some(G1));
}

#[test]
fn atomic_switch_offline_selects_the_generation_git_keeps_serving() {
    let w = World::new(Mode::Offline, atomic());
    let selector = |w: &World| -> BTreeMap<String, String> {
        let text = w.git(&["show", "HEAD:rollouts/demo/50-service-consumer.yaml"]);
        let v: Value = serde_saphyr::from_str(&text).unwrap();
        serde_json::from_value(v["spec"]["selector"].clone()).unwrap()
    };
    w.run(D1);
    assert_eq!(selector(&w)["snaproll.dev/generation"], G1);
    // Day 2: Git holds both generations; the Service stays on the one already there until a
    // run has committed the switch.
    w.run(D2);
    assert_eq!(selector(&w)["snaproll.dev/generation"], G1);
    let r = w.run(D3);
    assert_eq!(selector(&w)["snaproll.dev/generation"], G2);
    assert!(
        w.git_files().iter().any(|f| f.contains(G1)),
        "the StatefulSet of {G1} stays in Git for the run that switches: {:?}\n{}",
        w.git_files(),
        r.stdout
    );
    w.run(D3);
    assert!(
        !w.git_files()
            .iter()
            .any(|f| f.contains(&format!("statefulset-consumer-{G1}.yaml"))),
        "{:?}",
        w.git_files()
    );
}
