//! Events against the fake API: emitting the same transitions twice creates each Event once
//! (the second run's creates answer 409 and are skipped), and a failed create neither stops the
//! others nor is hidden from the caller.

use snaproll::apply::Manager;
use snaproll::events::{self, Event};
use snaproll::rollout::{Decision, GenerationStatus, State};

use crate::fakeapi::{FakeApi, Fault};

const NS: &str = "default";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

fn transitions() -> Vec<Event> {
    let text =
        std::fs::read_to_string(crate::common::repo_path("examples/gke-daily/snaproll.yaml"))
            .unwrap();
    let rollout = snaproll::spec::parse_str("s.yaml", &text).unwrap().rollout;
    let status = |g: &str, state: State, detail: &str| GenerationStatus {
        generation: g.into(),
        state,
        first_seen: None,
        detail: detail.into(),
    };
    let decision = Decision {
        dataset: "data".into(),
        waiting: None,
        generations: vec![
            status("2021-07-14", State::Serving, "3/3 replicas ready"),
            status("2021-07-15", State::RollingOut, "0/3 replicas ready"),
        ],
        render: Vec::new(),
        removed: false,
        notes: Vec::new(),
        foreign: Vec::new(),
        held_source: None,
        service: None,
    };
    events::from_decisions(&rollout, &[decision])
}

#[tokio::test]
async fn emitting_twice_creates_each_event_once_and_the_second_run_writes_nothing() {
    let api = FakeApi::new().await;
    let manager = Manager::new(api.client.clone(), "demo", NS);
    let evs = transitions();
    assert_eq!(evs.len(), 3);
    assert_eq!(events::emit_events(&manager, NS, &evs).await.unwrap(), 3);
    assert_eq!(events::emit_events(&manager, NS, &evs).await.unwrap(), 0);
    let mut names = api.names(EVENTS).await;
    names.sort();
    assert_eq!(
        names,
        [
            "consumer-2021-07-14.serving",
            "consumer-2021-07-15.rollingout",
            "data-2021-07-15.snapshotready",
        ]
    );
    let requests = api.requests();
    let on_events = |method: &str| {
        requests
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(EVENTS))
            .count()
    };
    assert_eq!(
        (on_events("GET"), on_events("POST")),
        (2, 3),
        "one LIST per run, and a create only for an Event not there yet"
    );
    let stored = api
        .get(&format!("{EVENTS}/consumer-2021-07-14.serving"))
        .await
        .unwrap();
    assert_eq!(stored["reportingController"], "snaproll.dev/snaproll");
    assert_eq!(stored["reason"], "Serving");
    assert_eq!(stored["action"], "Serve");
    assert_eq!(stored["type"], "Normal");
    assert_eq!(stored["regarding"]["kind"], "StatefulSet");
    assert_eq!(stored["regarding"]["apiVersion"], "apps/v1");
    assert_eq!(stored["regarding"]["name"], "consumer-2021-07-14");
    assert_eq!(stored["metadata"]["labels"]["snaproll.dev/rollout"], "demo");
    assert_eq!(
        stored["note"],
        "generation 2021-07-14 of dataset data is serving: 3/3 replicas ready"
    );
}

#[tokio::test]
async fn a_failed_create_is_returned_after_the_others_are_created() {
    let api = FakeApi::new().await;
    let manager = Manager::new(api.client.clone(), "demo", NS);
    api.inject(Fault::status("POST", EVENTS, 403, "Forbidden", "events is forbidden").times(1));
    let err = events::emit_events(&manager, NS, &transitions())
        .await
        .unwrap_err();
    assert_eq!(
        snaproll_chain(&err),
        "applying Event default/consumer-2021-07-14.serving: 403 Forbidden: events is forbidden"
    );
    assert_eq!(api.names(EVENTS).await.len(), 2);
}

fn snaproll_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut src = err.source();
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    parts.join(": ")
}

/// `status --events`: the rollout's last Events under its table, and in its JSON.
#[test]
fn status_shows_the_last_events_of_the_rollout() {
    use crate::lifecycle::{D1, Knobs, Mode, World};
    let w = World::new(Mode::Push, Knobs::default());
    w.settle(D1, 12);
    let status = |extra: &[&str]| {
        let out = crate::common::snaproll()
            .env("HOME", w.tmp.path())
            .args(["status", "-f"])
            .arg(&w.spec)
            .arg("--kubeconfig")
            .arg(&w.kubeconfig)
            .args(["--now", D1])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, _) = status(&["--events", "-o", "json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decisions"][0]["dataset"], "data");
    let reasons: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "Producing",
            "SnapshotTaken",
            "SnapshotReady",
            "RollingOut",
            "Serving"
        ],
        "{out}"
    );
    let serving = &v["events"][4];
    assert_eq!(serving["object"], "StatefulSet/consumer-2021-07-15");
    assert_eq!(serving["type"], "Normal");
    assert_eq!(serving["generation"], "2021-07-15");
    assert_eq!(
        serving["note"],
        "generation 2021-07-15 of dataset data is serving: 3/3 replicas ready"
    );

    // The text table: the decisions, then the last N Events in kubectl's columns.
    let (code, text, _) = status(&["--events=2"]);
    assert_eq!(code, Some(0));
    let events: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("TIME"))
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    assert!(
        events[0].starts_with("TIME")
            && events[0].contains("TYPE")
            && events[0].ends_with("MESSAGE"),
        "{text}"
    );
    assert!(events[1].contains("RollingOut"), "{text}");
    assert!(
        events[2].contains("Serving")
            && events[2].contains("StatefulSet/consumer-2021-07-15")
            && events[2]
                .ends_with("generation 2021-07-15 of dataset data is serving: 3/3 replicas ready"),
        "{text}"
    );

    // Without --events the JSON stays the list of decisions.
    let (_, out, _) = status(&["-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v.is_array(), "{out}");

    // A refused LIST is one line naming what was read, exit 4.
    w.api()
        .inject(Fault::status("GET", EVENTS, 403, "Forbidden", "events is forbidden").times(10));
    let (code, _, stderr) = status(&["--events"]);
    assert_eq!(code, Some(4), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "error: reading the Events of rollout demo: listing Event objects in namespace default: 403 Forbidden: events is forbidden"
    );
}
