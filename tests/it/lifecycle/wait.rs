//! `reconcile --wait` reacts to a watched status change within about a second, though its
//! resync (`--poll-interval`) is a minute: the run waits on watches of the rollout's Pods,
//! VolumeSnapshots and StatefulSets between steps.

use std::time::{Duration, Instant};

use super::*;
use crate::fakeapi::Fault;

/// The first request of the run (not a watch) after `since` that matches `what`.
fn first_after(api: &FakeApi, since: Instant, what: impl Fn(&Req) -> bool) -> Option<Instant> {
    api.requests()
        .into_iter()
        .filter(|r| r.at >= since && r.user_agent.starts_with("snaproll/") && !r.is_watch())
        .find(|r| what(r))
        .map(|r| r.at)
}

/// Waits (up to `limit`) until `f` gives something.
fn until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Waits until the run made no request (other than its watches) for `quiet`: it is pausing.
fn pausing(api: &FakeApi, quiet: Duration) {
    until(Duration::from_secs(30), || {
        let last = api
            .requests()
            .into_iter()
            .filter(|r| !r.is_watch() && r.user_agent.starts_with("snaproll/"))
            .map(|r| r.at)
            .max()?;
        (last.elapsed() >= quiet).then_some(())
    })
    .expect("the run never paused");
}

/// Kills the run if the test fails before it ended.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn creates(resource: &'static str) -> impl Fn(&Req) -> bool {
    move |r| r.method == "PATCH" && !r.is_dry_run() && r.resource() == resource
}

#[test]
fn wait_reacts_to_status_changes_within_a_second() {
    let w = World::new(Mode::Direct, Knobs::default());
    let api = w.api().clone();
    let started = Instant::now();
    let mut run = Running(
        w.std_command(D1, &["--wait", "--poll-interval", "60s", "--timeout", "5m"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut run.0;
    let producer = until(Duration::from_secs(30), || {
        first_after(&api, started, creates("pods"))
    });
    assert!(
        producer.is_some(),
        "the first step never created the producer"
    );
    let mut latencies = Vec::new();
    // Each flip is what a controller does; the run's next step must act on it: create the
    // snapshot, create the StatefulSet, and (once it is ready) settle and exit.
    for what in [
        "producer Succeeded",
        "snapshot readyToUse",
        "StatefulSet ready",
    ] {
        pausing(&api, Duration::from_millis(1500));
        let t0 = Instant::now();
        w.play();
        let at = until(Duration::from_secs(30), || match what {
            "producer Succeeded" => first_after(&api, t0, creates("volumesnapshots")),
            "snapshot readyToUse" => first_after(&api, t0, creates("statefulsets")),
            _ => child.try_wait().unwrap().map(|_| Instant::now()),
        })
        .unwrap_or_else(|| panic!("no step after {what}"));
        let latency = at.duration_since(t0);
        println!("--wait reacted to {what} in {} ms", latency.as_millis());
        // The resync is 60 s: anything under 5 s came from the watch.
        assert!(latency < Duration::from_secs(5), "{what}: {latency:?}");
        latencies.push(latency);
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    latencies.sort();
    println!(
        "--wait reaction, median of {}: {} ms",
        latencies.len(),
        latencies[latencies.len() / 2].as_millis()
    );
    w.check_invariants("after reconcile --wait");
}

/// Watches the server refuses (403, as without the `watch` verb) degrade to polling at the
/// resync period: the run still settles, and retries its watches at most about once a second
/// per kind, never in a tight loop.
#[test]
fn wait_without_watches_polls_at_the_resync() {
    let w = World::new(Mode::Direct, Knobs::default());
    let api = w.api().clone();
    api.inject(Fault::status("GET", "/", 403, "Forbidden", "watch is forbidden").watch(true));
    // A file, not a pipe: nobody reads the log while the run goes on.
    let log = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let mut run = Running(
        w.std_command(
            D1,
            &[
                "--wait",
                "--poll-interval",
                "2s",
                "--timeout",
                "2m",
                "--log-level",
                "debug",
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap(),
    );
    let child = &mut run.0;
    for resource in ["pods", "volumesnapshots", "statefulsets"] {
        until(Duration::from_secs(30), || {
            first_after(&api, started, creates(resource))
        })
        .unwrap_or_else(|| {
            let _ = child.kill();
            let stderr = std::fs::read_to_string(log.path()).unwrap();
            let log: Vec<String> = api
                .requests()
                .iter()
                .map(|r| format!("{} {}?{} {}", r.method, r.path, r.query, r.status))
                .collect();
            panic!("no {resource} created: {stderr}\n{}", log.join("\n"))
        });
        println!(
            "{resource} created after {} ms",
            started.elapsed().as_millis()
        );
        w.play();
    }
    let status =
        until(Duration::from_secs(30), || child.try_wait().unwrap()).unwrap_or_else(|| {
            panic!(
                "the run did not end once settled: {}",
                std::fs::read_to_string(log.path()).unwrap()
            )
        });
    let stderr = std::fs::read_to_string(log.path()).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let secs = started.elapsed().as_secs();
    let watches = api.requests().iter().filter(|r| r.is_watch()).count() as u64;
    println!("{watches} refused watches in {secs} s");
    assert!(watches > 0, "the run never tried to watch");
    assert!(watches <= 3 * (secs + 2), "{watches} watches in {secs} s");
}
