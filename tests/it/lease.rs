//! One run at a time: the rollout's `coordination.k8s.io/v1` Lease (`Manager::acquire_lease`)
//! against kube-fake-client behind the HTTP layer of `fakeapi` (which serialises requests, so
//! the fake's resourceVersion check on update is the API server's precondition).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use snaproll::apply::{ApplyError, LeaseGuard, Manager};

use crate::fakeapi::{FakeApi, Fault, Req};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases/snaproll-demo";

fn manager(api: &FakeApi) -> Manager {
    Manager::new(api.client.clone(), "demo", "default")
}

async fn lease(api: &FakeApi) -> Value {
    api.get(LEASE).await.expect("the Lease exists")
}

fn holder(l: &Value) -> Option<&str> {
    l.pointer("/spec/holderIdentity").and_then(Value::as_str)
}

fn transitions(l: &Value) -> i64 {
    l.pointer("/spec/leaseTransitions")
        .and_then(Value::as_i64)
        .unwrap()
}

fn renew_time(l: &Value) -> String {
    l.pointer("/spec/renewTime")
        .and_then(Value::as_str)
        .unwrap()
        .to_string()
}

/// `2021-07-18T10:00:00.123456Z`: MicroTime, RFC 3339 with microseconds.
fn is_micro_time(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 27
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[26] == b'Z'
        && s[20..26].bytes().all(|c| c.is_ascii_digit())
}

/// Stores a Lease held by `holder`, renewed `ago` seconds ago (the real clock).
async fn arrange(api: &FakeApi, holder: Option<&str>, ago: i64, transitions: i64) {
    let renewed = jiff_ago(ago);
    api.apply_as(
        "other-tool",
        LEASE,
        &json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "snaproll-demo", "namespace": "default"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 60,
                     "acquireTime": renewed, "renewTime": renewed,
                     "leaseTransitions": transitions}
        }),
        true,
    )
    .await;
}

fn jiff_ago(secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - secs;
    // Civil time from Unix seconds (days from civil, Howard Hinnant's algorithm).
    let (days, rem) = (now.div_euclid(86400), now.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000000Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn lease_requests(api: &FakeApi) -> Vec<(String, u16)> {
    api.requests()
        .iter()
        .filter(|r| r.is_lease())
        .map(|r| (r.method.clone(), r.status))
        .collect()
}

fn locked(r: Result<LeaseGuard, ApplyError>) -> ApplyError {
    match r {
        Ok(g) => panic!("took the Lease as {}", g.holder()),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_on_an_empty_cluster_creates_the_lease() {
    let api = FakeApi::new().await;
    let mgr = manager(&api);
    let guard = mgr.acquire_lease(Duration::from_secs(60)).await.unwrap();
    let l = lease(&api).await;
    assert_eq!(holder(&l), Some(guard.holder()));
    assert_eq!(l["spec"]["leaseDurationSeconds"], 60);
    assert_eq!(transitions(&l), 0);
    assert!(is_micro_time(&renew_time(&l)), "{l}");
    assert_eq!(l["spec"]["acquireTime"], l["spec"]["renewTime"]);
    assert_eq!(
        l["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "snaproll"
    );
    // `host/pid/6 hex digits`.
    let parts: Vec<&str> = guard.holder().rsplitn(3, '/').collect();
    assert_eq!(parts.len(), 3, "{}", guard.holder());
    assert_eq!(parts[1], std::process::id().to_string());
    assert!(parts[0].len() == 6 && parts[0].bytes().all(|c| c.is_ascii_hexdigit()));
    // One GET (404) and one create; counted apart from the object requests.
    assert_eq!(
        lease_requests(&api),
        [("GET".to_string(), 404), ("POST".to_string(), 201)]
    );
    let s = mgr.stats();
    assert_eq!((s.lease_reads, s.lease_writes, s.writes()), (1, 1, 0));
    assert_eq!(s.total(), 2);
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    guard.check().unwrap();
    guard.release().await.unwrap();
    let l = lease(&api).await;
    assert_eq!(holder(&l), None, "released: {l}");
    assert_eq!(transitions(&l), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_is_locked_out_naming_the_holder() {
    let api = FakeApi::new().await;
    let first = manager(&api)
        .acquire_lease(Duration::from_secs(60))
        .await
        .unwrap();
    let before = lease(&api).await;
    api.clear_requests();
    let err = locked(manager(&api).acquire_lease(Duration::from_secs(60)).await);
    let ApplyError::Locked {
        rollout,
        lease: name,
        holder: h,
        renewed,
        expires_in,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(rollout, "demo");
    assert_eq!(name, "default/snaproll-demo");
    assert_eq!(h, first.holder());
    assert!((58..=60).contains(expires_in), "{expires_in}");
    assert_eq!(renewed.len(), 20, "{renewed}");
    assert_eq!(
        err.to_string(),
        format!(
            "rollout demo is being changed by another run: Lease default/snaproll-demo held by {} (renewed {renewed}, expires in {expires_in}s); this run did nothing",
            first.holder()
        )
    );
    // Exit code 6, whatever wraps it.
    let wrapped = anyhow::Error::new(err).context("reconcile demo");
    assert_eq!(
        snaproll::commands::exit_code(&wrapped),
        snaproll::exit::LOCKED
    );
    assert_eq!(snaproll::exit::LOCKED, 6);
    // Only a read: the Lease is untouched.
    assert_eq!(lease_requests(&api), [("GET".to_string(), 200)]);
    assert_eq!(lease(&api).await, before);
    first.check().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over() {
    let api = FakeApi::new().await;
    arrange(&api, Some("crashed/7/abcdef"), 61, 3).await;
    let guard = manager(&api)
        .acquire_lease(Duration::from_secs(60))
        .await
        .unwrap();
    let l = lease(&api).await;
    assert_eq!(holder(&l), Some(guard.holder()));
    assert_eq!(transitions(&l), 4);
    assert!(is_micro_time(&renew_time(&l)));
    assert_eq!(
        lease_requests(&api),
        [("GET".to_string(), 200), ("PUT".to_string(), 200)]
    );
    // Not yet expired (renewed 50 s ago): still held.
    let api = FakeApi::new().await;
    arrange(&api, Some("slow/7/abcdef"), 50, 3).await;
    let err = locked(manager(&api).acquire_lease(Duration::from_secs(60)).await);
    assert!(
        matches!(&err, ApplyError::Locked { holder, expires_in, .. } if holder == "slow/7/abcdef" && (9..=10).contains(expires_in)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_at_once() {
    let api = FakeApi::new().await;
    let first = manager(&api)
        .acquire_lease(Duration::from_secs(60))
        .await
        .unwrap();
    first.release().await.unwrap();
    let second = manager(&api)
        .acquire_lease(Duration::from_secs(60))
        .await
        .unwrap();
    let l = lease(&api).await;
    assert_eq!(holder(&l), Some(second.holder()));
    assert_eq!(transitions(&l), 1);
    // A Lease released by someone else's tool (holder cleared just now) too.
    let api = FakeApi::new().await;
    arrange(&api, None, 0, 5).await;
    let g = manager(&api)
        .acquire_lease(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(holder(&lease(&api).await), Some(g.holder()));
    assert_eq!(transitions(&lease(&api).await), 6);
}

/// Both runs read before either write lands (a delay on the writes lines them up), so both
/// write with the same precondition: exactly one wins, the other is told who.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_runs_exactly_one_wins() {
    for expired in [false, true] {
        let api = FakeApi::new().await;
        if expired {
            arrange(&api, Some("crashed/7/abcdef"), 120, 0).await;
        }
        api.clear_requests();
        let write = if expired { "PUT" } else { "POST" };
        api.inject(Fault::delay(write, "/leases", Duration::from_millis(300)).times(2));
        let (m1, m2) = (manager(&api), manager(&api));
        let (a, b) = tokio::join!(
            m1.acquire_lease(Duration::from_secs(60)),
            m2.acquire_lease(Duration::from_secs(60)),
        );
        let (winner, err) = match (a, b) {
            (Ok(g), Err(e)) | (Err(e), Ok(g)) => (g, e),
            (Ok(_), Ok(_)) => panic!("both runs took the Lease"),
            (Err(a), Err(b)) => panic!("no run took the Lease: {a}; {b}"),
        };
        assert!(
            matches!(&err, ApplyError::Locked { holder, .. } if holder == winner.holder()),
            "{err}"
        );
        assert_eq!(holder(&lease(&api).await), Some(winner.holder()));
        // The loser's write was refused by the precondition (409), then it read the winner.
        let reqs = lease_requests(&api);
        let refused = reqs.iter().filter(|(m, s)| m == write && *s == 409).count();
        assert_eq!(refused, 1, "{reqs:?}");
        assert_eq!(
            reqs.iter().filter(|(m, s)| m == write && *s < 300).count(),
            1,
            "{reqs:?}"
        );
        assert_eq!(transitions(&lease(&api).await), i64::from(expired));
    }
}

/// The renewal runs on the runtime's workers: it advances while the caller's thread is
/// blocked in `std::thread::sleep` (as the engine is between `--wait` polls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_advances_renew_time_within_the_period() {
    let api = FakeApi::new().await;
    // 3 s: renewed every second.
    let guard = manager(&api)
        .acquire_lease(Duration::from_secs(3))
        .await
        .unwrap();
    let first = renew_time(&lease(&api).await);
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let l = lease(&api).await;
    let renewed = renew_time(&l);
    assert!(renewed > first, "{first} -> {renewed}");
    assert!(is_micro_time(&renewed));
    assert_eq!(holder(&l), Some(guard.holder()));
    assert_eq!(l["spec"]["leaseDurationSeconds"], 3);
    let puts = api
        .requests()
        .iter()
        .filter(|r: &&Req| r.is_lease() && r.method == "PUT")
        .count();
    assert!(
        (2..=3).contains(&puts),
        "{puts} renewals in {:?}",
        start.elapsed()
    );
    guard.check().unwrap();
    // Dropping the guard stops renewing without releasing: the Lease is left to expire.
    drop(guard);
    let dropped = lease(&api).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lease(&api).await, dropped);
    assert!(holder(&dropped).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_once_someone_else_took_the_lease() {
    let api = FakeApi::new().await;
    let guard = manager(&api)
        .acquire_lease(Duration::from_secs(3))
        .await
        .unwrap();
    guard.check().unwrap();
    // Another holder overwrites it (as a run that wrongly judged it expired would).
    arrange(&api, Some("thief/9/ffffff"), 0, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = guard.check().unwrap_err();
    let stolen = renew_time(&lease(&api).await);
    assert_eq!(
        err.to_string(),
        format!(
            "this run lost Lease default/snaproll-demo (held as {}): thief/9/ffffff took it over (renewed {}Z); it stopped writing the rollout",
            guard.holder(),
            &stolen[..19]
        )
    );
    assert!(matches!(err, ApplyError::LeaseLost { .. }));
    // Releasing a lost Lease leaves it to its new holder and reports the loss.
    let err = guard.release().await.unwrap_err();
    assert!(matches!(err, ApplyError::LeaseLost { .. }), "{err}");
    assert_eq!(holder(&lease(&api).await), Some("thief/9/ffffff"));
    assert_eq!(snaproll::commands::exit_code(&anyhow::Error::new(err)), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lease_or_failing_renewals_lose_the_hold() {
    let api = FakeApi::new().await;
    let guard = manager(&api)
        .acquire_lease(Duration::from_secs(3))
        .await
        .unwrap();
    // Someone breaks it by hand (`kubectl delete lease`).
    api.delete(LEASE).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = guard.check().unwrap_err();
    assert!(err.to_string().contains(": it was deleted;"), "{err}");
    drop(guard);
    // Renewals refused by the API until the hold would expire: lost, not renewed.
    let api = FakeApi::new().await;
    let guard = manager(&api)
        .acquire_lease(Duration::from_secs(3))
        .await
        .unwrap();
    api.inject(Fault::status(
        "PUT",
        "/leases/",
        403,
        "Forbidden",
        "no update on leases",
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = guard.check().unwrap_err();
    assert!(
        err.to_string()
            .contains("renewing it failed: 403 Forbidden: no update on leases"),
        "{err}"
    );
}
