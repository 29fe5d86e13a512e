//! `snapshot.copies: N`: each generation takes N snapshots, its StatefulSet starts only once
//! every copy is ready, and replica `r` restores from copy `r % N` through a claim snaproll
//! renders for the StatefulSet to adopt; retirement removes every copy, after the claims.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::lifecycle::{
    D1, D2, G1, G2, Knobs, Mode, PVCS, SNAPS, STS, World, generation_of, names, str_of,
};

fn copies(n: u32) -> Knobs {
    Knobs {
        copies: n,
        replicas: 4,
        ..Knobs::default()
    }
}

/// Each consumer claim of generation `g` with the snapshot it restores from.
fn restores(w: &World, g: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = w
        .items(PVCS)
        .iter()
        .filter(|v| {
            generation_of(v) == g
                && v.pointer("/metadata/labels/app.kubernetes.io~1component")
                    .and_then(Value::as_str)
                    == Some("consumer-volume")
        })
        .map(|v| {
            (
                str_of(&v["metadata"]["name"]),
                str_of(&v["spec"]["dataSource"]["name"]),
            )
        })
        .collect();
    out.sort();
    out
}

fn snapshots_of(g: &str) -> Vec<String> {
    (0..3).map(|i| format!("data-{g}-{i}")).collect()
}

fn round_robin(g: &str) -> Vec<(String, String)> {
    (0..4)
        .map(|r| {
            (
                format!("data-consumer-{g}-{r}"),
                format!("data-{g}-{}", r % 3),
            )
        })
        .collect()
}

#[test]
fn three_copies_gate_the_statefulset_restore_round_robin_and_retire_together() {
    for mode in [Mode::Push, Mode::Pull, Mode::Direct] {
        let w = World::new(mode, copies(3));
        let r = w.settle(D1, 12);
        assert_eq!(r.states("data"), [format!("{G1} serving")], "{mode:?}");
        assert_eq!(names(&w, SNAPS, G1), snapshots_of(G1), "{mode:?}");
        assert_eq!(restores(&w, G1), round_robin(G1), "{mode:?}");
        for s in w.items(SNAPS) {
            assert_eq!(
                s.pointer("/metadata/labels/snaproll.dev~1copies"),
                Some(&Value::from("3")),
                "{mode:?}"
            );
        }
        w.quiet(D1);

        // Day 2, copy 1 slow: every copy is taken, but no StatefulSet until all are ready.
        let slow = format!("data-{G2}-1");
        w.behave(G2, |b| {
            b.held_snapshots = BTreeSet::from([slow.clone()]);
        });
        let mut waited = false;
        for _ in 0..8 {
            let run = w.run(D2);
            w.play();
            if names(&w, SNAPS, G2).len() == 3 {
                let run = w.run(D2);
                w.play();
                assert_eq!(names(&w, SNAPS, G2), snapshots_of(G2), "{mode:?}");
                assert!(names(&w, STS, G2).is_empty(), "{mode:?}: {}", run.stdout);
                assert!(
                    run.states("data").contains(&format!("{G2} snapshotting")),
                    "{mode:?}: {:?}",
                    run.states("data")
                );
                assert!(run.stdout.contains(&slow), "{mode:?}: {}", run.stdout);
                waited = true;
                break;
            }
            assert!(names(&w, STS, G2).is_empty(), "{mode:?}: {}", run.stdout);
        }
        assert!(waited, "{mode:?}: the copies were never taken");
        w.behave(G2, |b| b.held_snapshots.clear());
        w.play();

        let r = w.settle(D2, 16);
        assert_eq!(r.states("data"), [format!("{G2} serving")], "{mode:?}");
        assert_eq!(names(&w, SNAPS, G2), snapshots_of(G2), "{mode:?}");
        assert_eq!(restores(&w, G2), round_robin(G2), "{mode:?}");
        // Day 1 retired: every copy and claim gone (the invariants, checked after every run
        // and controller step, hold that no copy went while a claim of its generation existed).
        assert!(names(&w, SNAPS, G1).is_empty(), "{mode:?}");
        assert!(names(&w, PVCS, G1).is_empty(), "{mode:?}");
        assert!(names(&w, STS, G1).is_empty(), "{mode:?}");
        w.quiet(D2);
    }
}

/// A spec change of `copies` reaches the next generation only: the serving one keeps its
/// snapshots and its claims' (immutable) `dataSource`.
#[test]
fn a_copies_change_reaches_the_next_generation_only() {
    let w = World::new(Mode::Push, copies(1));
    w.settle(D1, 12);
    assert_eq!(names(&w, SNAPS, G1), [format!("data-{G1}")]);
    w.set_knobs(|k| k.copies = 3);
    // Nothing of day 1 changes: its snapshot keeps its name, its claims their source.
    w.quiet(D1);
    assert_eq!(names(&w, SNAPS, G1), [format!("data-{G1}")]);
    let r = w.settle(D2, 16);
    assert_eq!(r.states("data"), [format!("{G2} serving")]);
    assert_eq!(names(&w, SNAPS, G2), snapshots_of(G2));
    assert_eq!(restores(&w, G2), round_robin(G2));
    assert!(names(&w, SNAPS, G1).is_empty());
}
