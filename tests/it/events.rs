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
    };
    events::from_decisions(&rollout, &[decision])
}

#[tokio::test]
async fn emitting_twice_creates_each_event_once() {
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
    let posts = api
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with(EVENTS))
        .count();
    assert_eq!(posts, 6, "one create per Event per run, nothing else");
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
