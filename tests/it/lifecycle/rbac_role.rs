//! The Role `install` renders against what these lifecycles request.

use super::*;

fn install_grants(spec: &Path, pull: bool) -> Vec<rbac::Grant> {
    install_grants_for(spec, Some("https://git.example.com/gitops.git"), pull)
}

fn install_grants_for(spec: &Path, repo: Option<&str>, pull: bool) -> Vec<rbac::Grant> {
    let loaded = snaproll::spec::load(spec).unwrap();
    let text = std::fs::read_to_string(spec).unwrap();
    let objects = install::render(
        &loaded.rollout,
        &loaded.file,
        &text,
        &InstallOptions {
            schedule: "*/15 * * * *".into(),
            repo: repo.map(str::to_string),
            git_secret: "snaproll-git".into(),
            image: install::default_image(),
            namespace: None,
            pull,
            snapshot_timeout: None,
        },
    )
    .unwrap();
    install::rbac::grants(&objects)
}

#[test]
fn push_role_is_exactly_what_the_push_lifecycle_requests() {
    let w = World::new(
        Mode::Push,
        Knobs {
            datasets: vec!["data", "extra"],
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    // A dataset leaves the spec: its Service and source PVC are pruned too.
    w.set_knobs(|k| k.datasets = vec!["data"]);
    w.settle(D2, 12);
    let requests = rbac_requests(&w.api().requests());
    let report = rbac::check(&install_grants(&w.spec, false), &requests);
    assert!(
        report.is_exact(),
        "denied: {:#?}\nunused: {:#?}",
        report.denied,
        report.unused
    );
}

/// With `consumer.verify`, the Role adds writing Jobs, and the lifecycle (a passing and a
/// failing verify, retirement) uses all of it: create, patch, delete and the one LIST.
#[test]
fn push_role_with_verify_is_exactly_what_the_verify_lifecycle_requests() {
    let w = World::new(
        Mode::Push,
        Knobs {
            verify: true,
            ..Knobs::default()
        },
    );
    w.settle(D1, 12);
    w.behave(G2, |b| b.verify_fails = Some("checksum mismatch".into()));
    w.settle_allowing(D2, 12, &[0, 1]);
    w.settle_allowing(D3, 16, &[0, 1]);
    let requests = rbac_requests(&w.api().requests());
    let report = rbac::check(&install_grants(&w.spec, false), &requests);
    // Only a dataset leaving the spec deletes a Service (the test above covers it).
    assert!(
        report.denied.is_empty() && report.unused == ["delete core/services"],
        "denied: {:#?}\nunused: {:#?}",
        report.denied,
        report.unused
    );
}

/// What `install` without `--repo` renders is exactly what its CronJob's command
/// (`reconcile --apply --prune`, no Git) requests over days and a dataset leaving the spec.
#[test]
fn gitless_role_is_exactly_what_the_gitless_lifecycle_requests() {
    let w = World::new(
        Mode::Direct,
        Knobs {
            datasets: vec!["data", "extra"],
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    w.set_knobs(|k| k.datasets = vec!["data"]);
    w.settle(D2, 12);
    assert!(!w.repo.exists(), "no Git is written");
    let deleted: BTreeSet<String> = w
        .api()
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.resource())
        .collect();
    for kind in [
        "statefulsets",
        "volumesnapshots",
        "pods",
        "services",
        "persistentvolumeclaims",
    ] {
        assert!(deleted.contains(kind), "no {kind} pruned: {deleted:?}");
    }
    let requests = rbac_requests(&w.api().requests());
    let report = rbac::check(&install_grants_for(&w.spec, None, false), &requests);
    assert!(
        report.is_exact(),
        "denied: {:#?}\nunused: {:#?}",
        report.denied,
        report.unused
    );
}

#[test]
fn pull_role_allows_everything_the_pull_lifecycle_requests() {
    let w = World::new(Mode::Pull, Knobs::default());
    w.settle(D1, 8);
    w.settle(D2, 12);
    let requests = rbac_requests(&w.api().requests());
    let report = rbac::check(&install_grants(&w.spec, true), &requests);
    assert!(
        report.is_exact(),
        "denied: {:#?}\nunused: {:#?}",
        report.denied,
        report.unused
    );
}

#[test]
fn existing_class_lifecycle_needs_no_cluster_role() {
    let w = World::new(
        Mode::Push,
        Knobs {
            existing_class: true,
            ..Knobs::default()
        },
    );
    w.settle(D1, 8);
    w.settle(D2, 12);
    let grants = install_grants(&w.spec, false);
    assert!(grants.iter().all(|g| g.namespace.is_some()), "{grants:#?}");
    let requests = rbac_requests(&w.api().requests());
    assert!(
        requests.iter().all(|r| r.namespace.is_some()),
        "cluster-scoped requests: {requests:#?}"
    );
    // Sufficient (minimality is the full push lifecycle's test, which also drops a dataset).
    let report = rbac::check(&grants, &requests);
    assert!(report.denied.is_empty(), "denied: {:#?}", report.denied);
}
