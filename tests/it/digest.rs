//! Unchanged data: a producer that writes the serving generation's digest as its termination
//! message takes no snapshot and rolls nothing; the serving generation stays, and the skipped
//! generation is not started again.

use serde_json::Value;

use crate::lifecycle::{D1, D2, D3, G1, G2, G3, Knobs, Mode, PODS, SNAPS, World, str_of};

const A: &str = "sha256:aaaa";
const B: &str = "sha256:bbbb";

/// The annotations of snapshot `data-<generation>`, if it exists.
fn snapshot_annotation(w: &World, generation: &str, key: &str) -> Option<String> {
    w.items(SNAPS)
        .into_iter()
        .find(|s| str_of(&s["metadata"]["name"]) == format!("data-{generation}"))
        .and_then(|s| {
            s.pointer("/metadata/annotations")
                .and_then(|a| a.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
}

fn unchanged_day_is_skipped(mode: Mode) {
    let w = World::new(mode, Knobs::default());
    w.behave(G1, |b| b.producer_message = Some(format!(" {A}\n")));
    w.behave(G2, |b| b.producer_message = Some(A.to_string()));
    w.behave(G3, |b| b.producer_message = Some(B.to_string()));

    // Day 1: the digest is recorded on the snapshot.
    let r = w.settle(D1, 12);
    assert_eq!(r.states("data"), [format!("{G1} serving")]);
    assert_eq!(
        snapshot_annotation(&w, G1, "snaproll.dev/digest").as_deref(),
        Some(A)
    );
    w.take_events();

    // Day 2: the producer runs and reports the same digest.
    let r = w.run(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} producing")]
    );
    w.play();
    let r = w.run(D2);
    assert_eq!(
        r.states("data"),
        [format!("{G1} serving"), format!("{G2} unchanged")],
        "{}",
        r.stdout
    );
    let detail = format!("data unchanged (digest {A}); generation {G1} keeps serving");
    assert_eq!(r.detail("data", G2), detail);
    assert_eq!(
        snapshot_annotation(&w, G1, "snaproll.dev/unchanged").as_deref(),
        Some(G2)
    );
    assert_eq!(
        snapshot_annotation(&w, G1, "snaproll.dev/digest").as_deref(),
        Some(A)
    );
    // Further runs on day 2 start nothing and still say why nothing rolled.
    w.play();
    for _ in 0..2 {
        let r = w.quiet(D2);
        assert_eq!(
            r.states("data"),
            [format!("{G1} serving"), format!("{G2} unchanged")]
        );
        assert_eq!(r.detail("data", G2), detail);
        w.play();
    }
    let (code, status, stderr) = w.status(D2);
    assert_eq!(code, 0, "{stderr}");
    assert!(status.to_string().contains("\"unchanged\""), "{status}");
    // Nothing of generation 2 but its producer ever existed, and the producer is gone.
    assert_eq!(
        w.take_events(),
        [
            format!("+Pod/data-producer-{G2}"),
            format!("-Pod/data-producer-{G2}")
        ]
    );
    assert!(
        w.items(PODS)
            .iter()
            .all(|p| str_of(&p["metadata"]["name"]) != format!("data-producer-{G2}"))
    );

    // Day 3: new data rolls out as usual.
    let r = w.settle(D3, 12);
    assert_eq!(r.states("data"), [format!("{G3} serving")], "{}", r.stdout);
    assert_eq!(
        snapshot_annotation(&w, G3, "snaproll.dev/digest").as_deref(),
        Some(B)
    );
    let events = w.take_events();
    assert!(
        events.contains(&format!("+StatefulSet/consumer-{G3}"))
            && events.contains(&format!("-StatefulSet/consumer-{G1}")),
        "{events:?}"
    );
    w.quiet(D3);
}

#[test]
fn a_producer_reporting_the_serving_digest_rolls_nothing_push() {
    unchanged_day_is_skipped(Mode::Push);
}

#[test]
fn a_producer_reporting_the_serving_digest_rolls_nothing_pull() {
    unchanged_day_is_skipped(Mode::Pull);
}

#[test]
fn a_producer_reporting_the_serving_digest_rolls_nothing_direct() {
    unchanged_day_is_skipped(Mode::Direct);
}

/// Without a digest nothing changes: the same (empty) termination message every day still
/// rolls out every day.
#[test]
fn without_a_digest_every_day_rolls_out() {
    let w = World::new(Mode::Push, Knobs::default());
    w.behave(G1, |b| b.producer_message = Some("  ".to_string()));
    w.behave(G2, |b| b.producer_message = Some("  ".to_string()));
    w.settle(D1, 12);
    let r = w.settle(D2, 12);
    assert_eq!(r.states("data"), [format!("{G2} serving")], "{}", r.stdout);
}
