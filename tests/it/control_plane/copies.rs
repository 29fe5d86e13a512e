//! `snapshot.copies` against the real StatefulSet controller: the claims snaproll pre-creates
//! round-robin are the ones the controller uses (it makes none of its own), it adopts them under
//! `persistentVolumeClaimRetentionPolicy`, its ownerReferences are no drift to the next run, and
//! retirement removes every copy with its generation.

use super::*;

/// Claim name -> (the copy it restores from, the StatefulSet that owns it).
fn claims(r: &Rollout) -> BTreeMap<String, (String, String)> {
    r.c.items("persistentvolumeclaims")
        .into_iter()
        .filter(|c| c["metadata"]["deletionTimestamp"].is_null())
        .map(|c| {
            let owner = c["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["kind"] == "StatefulSet")
                .map(|o| o["name"].as_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            (
                c["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                (
                    c["spec"]["dataSource"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    owner,
                ),
            )
        })
        .collect()
}

#[test]
fn copies_are_restored_round_robin_by_the_statefulset_controller() {
    let Some(mut r) = Rollout::new("copies") else {
        return;
    };
    r.extra = "      snapshot:\n        copies: 2\n".into();
    r.replicas = 3;
    r.write_spec();

    for (now, g, old) in [(D1, G1, None), (D2, G2, Some(G1))] {
        let run = r.settle(now);
        assert_eq!(run.states(), [format!("{g} serving")], "{}", run.stdout);
        // The controller's ownerReferences on the claims it adopted are not drift: the next run
        // writes nothing.
        r.quiet(now);

        let names = r.c.names();
        assert_eq!(
            names.get("VolumeSnapshot").cloned().unwrap_or_default(),
            [format!("data-{g}-0"), format!("data-{g}-1")],
            "both copies, and none of the retired generation's"
        );
        let sts = format!("consumer-{g}");
        let want: BTreeMap<String, (String, String)> = (0..3)
            .map(|i| {
                (
                    format!("data-consumer-{g}-{i}"),
                    (format!("data-{g}-{}", i % 2), sts.clone()),
                )
            })
            .chain([("data".to_string(), (String::new(), String::new()))])
            .collect();
        assert_eq!(
            claims(&r),
            want,
            "replica r restores copy r % 2, adopted by the StatefulSet; no claim of {old:?} left"
        );
        // The controller made no claim of its own: every pod's claim is one snaproll rendered.
        assert_eq!(
            names.get("Pod").cloned().unwrap_or_default(),
            [
                format!("consumer-{g}-0"),
                format!("consumer-{g}-1"),
                format!("consumer-{g}-2"),
                format!("data-producer-{g}")
            ]
        );
        assert_eq!(names.get("StatefulSet"), Some(&vec![sts]));
    }

    // A scale-up of the serving generation: the new ordinal's claim restores the next copy
    // in turn, rendered before the StatefulSet grows, so the controller again makes none.
    r.replicas = 4;
    r.write_spec();
    let run = r.settle(D2);
    assert_eq!(run.states(), [format!("{G2} serving")], "{}", run.stdout);
    r.quiet(D2);
    let got = claims(&r);
    assert_eq!(
        got.get(&format!("data-consumer-{G2}-3")),
        Some(&(format!("data-{G2}-1"), format!("consumer-{G2}"))),
        "{got:#?}"
    );
    assert_eq!(got.len(), 5, "{got:#?}");
}
