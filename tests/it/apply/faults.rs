//! Transient errors, retries, and every fault at every step of a two-generation rollout.

use super::*;

#[tokio::test]
async fn transient_errors_are_retried_with_bounded_backoff() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    api.inject(
        Fault::status(
            "PATCH",
            "/services/",
            500,
            "InternalError",
            "etcd leader changed",
        )
        .dry_run(false)
        .times(2),
    );
    api.inject(Fault::status("GET", "/pods", 429, "TooManyRequests", "slow down").times(1));
    ok(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    assert_eq!(mgr.stats().retries, 3);
    // Bounded: a permanent 503 gives up after the configured attempts, naming the object.
    api.inject(Fault::status(
        "GET",
        "/statefulsets",
        503,
        "ServiceUnavailable",
        "down",
    ));
    let f = err(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    let msg = f.error.to_string();
    assert!(msg.contains("StatefulSet"), "{msg}");
    assert!(
        format!("{}", std::error::Error::source(&f.error).unwrap()).contains("after 3 attempts")
    );
}

/// A server's Retry-After is waited only up to the policy's longest delay: a 30 s request
/// does not stall a run whose `max_delay` is 5 ms.
#[tokio::test]
async fn retry_after_is_capped_by_the_longest_delay() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    api.inject(
        Fault::status("GET", "/statefulsets", 429, "TooManyRequests", "slow down")
            .retry_after(30)
            .times(1),
    );
    let start = std::time::Instant::now();
    ok(mgr
        .apply(&render(&SpecOpts::default(), G1), &opts(true))
        .await);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(mgr.stats().retries, 1);
}

#[tokio::test]
async fn only_connection_failures_are_retried_among_errors_without_an_http_answer() {
    let api = FakeApi::new().await;
    let mgr = manager(&api, "demo");
    let g1 = render(&SpecOpts::default(), G1);
    // A reset connection is retried and the run succeeds.
    api.inject(Fault::reset("GET", "/statefulsets").times(2));
    ok(mgr.apply(&g1, &opts(true)).await);
    assert_eq!(mgr.stats().retries, 2);
    // An answer that does not decode is final: one attempt, the kind named, nothing written.
    mgr.reset_stats();
    api.clear_requests();
    api.inject(Fault::body("GET", "/statefulsets", "{not json"));
    let f = err(mgr.apply(&g1, &opts(true)).await);
    assert!(matches!(f.error, ApplyError::List { .. }), "{}", f.error);
    assert_eq!(
        f.error.to_string(),
        format!("listing StatefulSet objects in namespace {NS}")
    );
    assert_eq!(mgr.stats().retries, 0);
    let sts_lists = api
        .requests()
        .iter()
        .filter(|r| r.is_list() && r.resource() == "statefulsets")
        .count();
    assert_eq!(sts_lists, 1);
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

/// How a fault scenario arranges the cluster so its step happens at all.
#[derive(Clone, Copy, PartialEq)]
enum Arrange {
    /// Applying G2 over G1 as is.
    Plain,
    /// The parent is gone (deleted by hand), so the run dry-runs and writes it.
    NoParent,
    /// G2 renders no producer Pod, so the prune narrows the parent (drops `Pod`).
    NoProducer,
}

/// Which phase a step belongs to, for what must survive its failure.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    /// Reads, dry-runs, the parent's widening and the applies: nothing may be deleted.
    BeforePrune,
    DeleteStatefulSet,
    DeleteClaims,
    DeleteSnapshot,
    DeletePod,
    Narrow,
}

/// One step of a run where a fault can strike.
struct Step {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    dry_run: Option<bool>,
    arrange: Arrange,
    phase: Phase,
}

const fn step(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    dry_run: Option<bool>,
    arrange: Arrange,
    phase: Phase,
) -> Step {
    Step {
        name,
        method,
        path,
        dry_run,
        arrange,
        phase,
    }
}

const STEPS: [Step; 17] = [
    step(
        "read parent",
        "GET",
        "/configmaps/snaproll-demo",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "get snapshot class",
        "GET",
        "/volumesnapshotclasses/csi-snapclass",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "list statefulsets",
        "GET",
        "/statefulsets",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "list snapshots",
        "GET",
        "/volumesnapshots",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "list pods",
        "GET",
        "/pods",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    // The one PVC LIST is also where the prune finds the consumer PVCs.
    step(
        "list pvcs (consumer claims)",
        "GET",
        "/persistentvolumeclaims",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "list services",
        "GET",
        "/services",
        None,
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "dry-run parent",
        "PATCH",
        "/configmaps/",
        Some(true),
        Arrange::NoParent,
        Phase::BeforePrune,
    ),
    step(
        "dry-run",
        "PATCH",
        "/statefulsets/",
        Some(true),
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "widen parent",
        "PATCH",
        "/configmaps/",
        Some(false),
        Arrange::NoParent,
        Phase::BeforePrune,
    ),
    step(
        "apply",
        "PATCH",
        "/statefulsets/",
        Some(false),
        Arrange::Plain,
        Phase::BeforePrune,
    ),
    step(
        "delete statefulset",
        "DELETE",
        "/statefulsets/",
        None,
        Arrange::Plain,
        Phase::DeleteStatefulSet,
    ),
    step(
        "delete consumer pvc",
        "DELETE",
        "/persistentvolumeclaims/data-data-consumer-",
        None,
        Arrange::Plain,
        Phase::DeleteClaims,
    ),
    step(
        "delete snapshot",
        "DELETE",
        "/volumesnapshots/",
        None,
        Arrange::Plain,
        Phase::DeleteSnapshot,
    ),
    step(
        "delete producer pod",
        "DELETE",
        "/pods/",
        None,
        Arrange::Plain,
        Phase::DeletePod,
    ),
    step(
        "delete producer pod (narrowing run)",
        "DELETE",
        "/pods/",
        None,
        Arrange::NoProducer,
        Phase::DeletePod,
    ),
    step(
        "narrow parent",
        "PATCH",
        "/configmaps/",
        Some(false),
        Arrange::NoProducer,
        Phase::Narrow,
    ),
];

enum Hit {
    Status(u16, &'static str, &'static str),
    Timeout,
}

const FAULTS: [(&str, Hit); 5] = [
    (
        "409",
        Hit::Status(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version",
        ),
    ),
    (
        "422",
        Hit::Status(422, "Invalid", "metadata.labels: Invalid value"),
    ),
    (
        "429",
        Hit::Status(429, "TooManyRequests", "too many requests"),
    ),
    (
        "500",
        Hit::Status(500, "InternalError", "etcdserver: request timed out"),
    ),
    ("timeout", Hit::Timeout),
];

fn fault(step: &Step, hit: &Hit) -> Fault {
    let mut f = match hit {
        Hit::Status(code, reason, msg) => Fault::status(step.method, step.path, *code, reason, msg),
        Hit::Timeout => Fault::delay(step.method, step.path, Duration::from_millis(600)),
    };
    f.dry_run = step.dry_run;
    f
}

fn g1_claims() -> Vec<String> {
    (0..3)
        .map(|i| format!("data-data-consumer-{G1}-{i}"))
        .collect()
}

/// What survives of G1: StatefulSets, snapshots, producer Pods and consumer claims of G1.
async fn g1_left(api: &FakeApi) -> (bool, bool, bool, Vec<String>) {
    let g1 = |names: Vec<String>| names.iter().any(|n| n.ends_with(G1));
    let claims: Vec<String> = api
        .names(PVCS)
        .await
        .into_iter()
        .filter(|n| n.contains(G1))
        .collect();
    (
        g1(api.names(STS).await),
        g1(api.names(SNAPS).await),
        g1(api.names(PODS).await),
        claims,
    )
}

/// One scenario: `hit` at `step`, recovering within the retry budget (`permanent: false`,
/// transient faults only) or never. Panics naming the scenario on any broken expectation.
async fn fault_scenario(step: &Step, label: &str, hit: &Hit, permanent: bool) {
    let what = format!(
        "{} {label} at {}",
        if permanent { "permanent" } else { "clearing" },
        step.name
    );
    let api = FakeApi::new().await;
    let (mgr, g2) = two_generations(&api).await;
    let g2 = match step.arrange {
        Arrange::NoProducer => render_with(&SpecOpts::default(), |r| {
            let mut p = Plan::single(r, G2);
            for gens in p.datasets.values_mut() {
                gens[0].producer = false;
            }
            p
        }),
        _ => g2,
    };
    if step.arrange == Arrange::NoParent {
        api.delete(PARENT).await;
    }
    let converged = |api: FakeApi, mgr: Manager, g2: RenderedSet, what: String| async move {
        ok(mgr.apply(&g2, &opts(true)).await);
        assert_eq!(
            g1_left(&api).await,
            (false, false, false, Vec::new()),
            "{what}: G1 not gone after the re-run"
        );
        assert_eq!(
            api.names(STS).await,
            vec![format!("data-consumer-{G2}")],
            "{what}"
        );
        assert_eq!(api.names(SNAPS).await, vec![format!("data-{G2}")], "{what}");
        api.clear_requests();
        ok(mgr.apply(&g2, &opts(true)).await);
        assert!(
            api.writes().is_empty(),
            "{what}: not converged: {:?}",
            api.writes()
        );
    };
    api.clear_requests();
    if !permanent {
        api.inject(fault(step, hit).times(2));
        let cs = ok(mgr.apply(&g2, &opts(true)).await);
        assert_eq!(cs.summary.deleted, 6, "{what}: {:?}", cs.changes);
        assert!(mgr.stats().retries >= 2, "{what}: {:?}", mgr.stats());
        return converged(api, mgr, g2, what).await;
    }
    api.inject(fault(step, hit));
    let f = match mgr.apply(&g2, &opts(true)).await {
        Ok(c) => panic!("{what}: run succeeded: {:?}", c.summary),
        Err(f) => f,
    };
    let msg = format!("{}: {}", f, f.error);
    assert!(
        f.error.object().is_some(),
        "{what}: error names no object: {msg}"
    );
    // A timed-out request may still have been carried out by the server (the fake answers
    // late): the object the faulty DELETE was about may be gone, but everything that depends
    // on it must stay, since the run cannot know.
    let late = matches!(hit, Hit::Timeout);
    let faulty = |r: &Req| late && r.method == step.method && r.path.contains(step.path);
    let deleted: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.status < 300 && !faulty(r))
        .map(|r| format!("{}/{}", r.resource(), r.name().unwrap_or_default()))
        .collect();
    let mut left = g1_left(&api).await;
    if late {
        match step.phase {
            Phase::DeleteStatefulSet => left.0 = true,
            Phase::DeleteClaims => left.3 = g1_claims(),
            Phase::DeleteSnapshot => left.1 = true,
            Phase::DeletePod => left.2 = true,
            _ => {}
        }
    }
    let delete_error = |kind: &str| {
        assert!(
            matches!(f.error, ApplyError::Delete { .. }),
            "{what}: {msg}"
        );
        assert!(
            f.error
                .to_string()
                .starts_with(&format!("deleting {kind}/")),
            "{what}: {msg}"
        );
    };
    match step.phase {
        Phase::BeforePrune => {
            assert!(
                !api.requests().iter().any(|r| r.method == "DELETE"),
                "{what}: deleted after a failure: {:?}",
                api.requests()
            );
            assert_eq!(left, (true, true, true, g1_claims()), "{what}");
            assert!(msg.contains("nothing was pruned"), "{what}: {msg}");
        }
        Phase::DeleteStatefulSet => {
            delete_error("StatefulSet");
            // The StatefulSet stays, so its claims and the snapshot they restore from stay.
            assert_eq!(left, (true, true, false, g1_claims()), "{what}");
            assert_eq!(deleted, vec![format!("pods/data-producer-{G1}")], "{what}");
        }
        Phase::DeleteClaims => {
            delete_error("PersistentVolumeClaim");
            assert_eq!(left, (false, true, false, g1_claims()), "{what}");
            assert_eq!(
                deleted,
                vec![
                    format!("statefulsets/data-consumer-{G1}"),
                    format!("pods/data-producer-{G1}")
                ],
                "{what}"
            );
        }
        Phase::DeleteSnapshot => {
            delete_error("VolumeSnapshot");
            assert_eq!(left, (false, true, false, Vec::new()), "{what}");
        }
        Phase::DeletePod => {
            delete_error("Pod");
            assert_eq!(left, (false, false, true, Vec::new()), "{what}");
            assert!(recorded_kinds(&api).await.contains("Pod"), "{what}");
        }
        Phase::Narrow => {
            assert!(
                matches!(f.error, ApplyError::Parent { .. }),
                "{what}: {msg}"
            );
            assert_eq!(left, (false, false, false, Vec::new()), "{what}");
            // The wider inventory stays until a narrowing succeeds.
            assert!(recorded_kinds(&api).await.contains("Pod"), "{what}");
        }
    }
    api.clear_faults();
    converged(api.clone(), mgr, g2, what.clone()).await;
    if step.phase == Phase::Narrow || step.arrange == Arrange::NoProducer {
        assert!(!recorded_kinds(&api).await.contains("Pod"), "{what}");
    }
}

/// Every fault at every step: a permanent fault (409 and 422 always; 429, 500 and timeouts
/// once the retries run out) fails the run with the object named and deletes nothing that
/// the failed step protects (nothing at all before the prune; the claims and snapshot of a
/// StatefulSet that could not be deleted; the snapshot of claims that could not be); a
/// transient fault that clears is retried within the run. A re-run without the fault
/// converges and the run after that writes nothing.
#[tokio::test]
async fn every_fault_at_every_step_stops_safely_and_a_rerun_converges() {
    let mut scenarios = Vec::new();
    for step in &STEPS {
        for (label, hit) in &FAULTS {
            let transient = !matches!(hit, Hit::Status(409 | 422, ..));
            if transient {
                scenarios.push(fault_scenario(step, label, hit, false));
            }
            scenarios.push(fault_scenario(step, label, hit, true));
        }
    }
    assert_eq!(scenarios.len(), STEPS.len() * (2 + 3 * 2));
    use futures::StreamExt;
    futures::stream::iter(scenarios)
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test]
async fn permanent_timeouts_fail_the_run_without_pruning() {
    let api = FakeApi::new().await;
    let (mgr, g2) = two_generations(&api).await;
    api.inject(Fault::delay("PATCH", "/statefulsets/", Duration::from_millis(600)).dry_run(false));
    let f = err(mgr.apply(&g2, &opts(true)).await);
    assert!(matches!(f.error, ApplyError::Apply { .. }), "{}", f.error);
    assert!(
        std::error::Error::source(&f.error)
            .unwrap()
            .to_string()
            .contains("no answer within")
    );
    assert!(!api.requests().iter().any(|r| r.method == "DELETE"));
    api.clear_faults();
    ok(mgr.apply(&g2, &opts(true)).await);
    assert_eq!(api.names(STS).await, vec![format!("data-consumer-{G2}")]);
}
