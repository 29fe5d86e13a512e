//! The least-privilege Role and ClusterRole `install` renders, checked by the real authorizer.

use super::*;

/// The objects `snaproll install` renders for this rollout (`--pull` when `pull`), applied by
/// the harness's admin; returns the CronJob container's arguments, with the spec's in-cluster
/// path replaced by the local one, the ServiceAccount's name, and the Role's and ClusterRole's
/// rules (`Null` when not rendered).
fn install(r: &Rollout, repo: &str, pull: bool) -> (Vec<String>, String, Value, Value) {
    let mut cmd = snaproll();
    cmd.args(["install", "-f"])
        .arg(&r.spec)
        .args(["--repo", repo]);
    if pull {
        cmd.arg("--pull");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut args = Vec::new();
    let mut account = String::new();
    let (mut role, mut cluster_role) = (Value::Null, Value::Null);
    for doc in text.split("\n---\n").filter(|d| !d.trim().is_empty()) {
        let v: Value = serde_saphyr::from_str(doc).unwrap();
        match v["kind"].as_str() {
            Some("CronJob") => {
                let c = &v["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
                args = c["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        let a = a.as_str().unwrap().to_string();
                        if a.ends_with("/snaproll.yaml") {
                            r.spec.display().to_string()
                        } else {
                            a
                        }
                    })
                    .collect();
            }
            Some("ServiceAccount") => {
                account = v["metadata"]["name"].as_str().unwrap().to_string();
            }
            Some("Role") => role = v["rules"].clone(),
            Some("ClusterRole") => cluster_role = v["rules"].clone(),
            _ => {}
        }
        r.c.apply_admin(&v);
    }
    (args, account, role, cluster_role)
}

/// One distinct authorization a run needed: verb, API group, resource, subresource, namespace
/// (empty: cluster scope), name.
type Need = (String, String, String, String, String, String);

/// What `user`'s successful requests (after its first `skip`) needed, from the audit log; a
/// server-side apply that created its object (201) needed `create` as well as `patch`.
fn needs(c: &Cluster, user: &str, skip: usize) -> std::collections::BTreeSet<Need> {
    let mut out = std::collections::BTreeSet::new();
    for a in c.plane.audit(user).into_iter().skip(skip) {
        // Dry-runs are authorized as the real requests are.
        if a.code() >= 400 {
            continue;
        }
        let o = &a.0["objectRef"];
        let field = |k: &str| o[k].as_str().unwrap_or_default().to_string();
        let need = |verb: &str| {
            (
                verb.to_string(),
                field("apiGroup"),
                field("resource"),
                field("subresource"),
                field("namespace"),
                field("name"),
            )
        };
        out.insert(need(a.verb()));
        if a.verb() == "patch" && a.code() == 201 {
            out.insert(need("create"));
        }
    }
    out
}

/// Whether the real authorizer allows `need` to `user` (`kubectl auth can-i --as`).
fn can(c: &Cluster, user: &str, need: &Need) -> bool {
    let (verb, group, resource, sub, ns, name) = need;
    let mut target = resource.clone();
    if !group.is_empty() {
        target = format!("{target}.{group}");
    }
    if !name.is_empty() {
        target = format!("{target}/{name}");
    }
    let mut cmd = c.plane.kubectl();
    cmd.args(["auth", "can-i", verb, &target, "--as", user]);
    if !sub.is_empty() {
        cmd.arg(format!("--subresource={sub}"));
    }
    if !ns.is_empty() {
        cmd.arg(format!("--namespace={ns}"));
    }
    cmd.output().unwrap().status.success()
}

/// For each rule of the Role and the ClusterRole, a copy without that rule, bound to a
/// ServiceAccount of its own, is denied at least one of the requests the CronJob's runs made:
/// every rule is needed. Asked of the real authorizer.
fn every_rule_is_needed(
    c: &Cluster,
    needs: &std::collections::BTreeSet<Need>,
    role: &Value,
    cluster_role: &Value,
) {
    let ns = &c.ns;
    let minus = format!("system:serviceaccount:{ns}:minus");
    c.apply_admin(&json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "minus", "namespace": ns}}));
    c.apply_admin(
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "minus", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "minus"},
        "subjects": [{"kind": "ServiceAccount", "name": "minus", "namespace": ns}]}),
    );
    c.apply_admin(&json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("minus-{ns}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("minus-{ns}")},
        "subjects": [{"kind": "ServiceAccount", "name": "minus", "namespace": ns}]}));
    let rules = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let (role, cluster_role) = (rules(role), rules(cluster_role));
    let variants = (0..role.len())
        .map(|i| (true, i))
        .chain((0..cluster_role.len()).map(|i| (false, i)));
    for (in_role, i) in variants {
        let without = |rules: &[Value], skip: bool| -> Vec<Value> {
            rules
                .iter()
                .enumerate()
                .filter(|(j, _)| !(skip && *j == i))
                .map(|(_, r)| r.clone())
                .collect()
        };
        // kubectl apply replaces the rules list: an empty one is sent as such.
        c.kubectl_ok(&["delete", "role", "minus", "--ignore-not-found"]);
        c.kubectl_ok(&[
            "delete",
            "clusterrole",
            &format!("minus-{ns}"),
            "--ignore-not-found",
        ]);
        c.apply_admin(
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "minus", "namespace": ns}, "rules": without(&role, in_role)}),
        );
        c.apply_admin(&json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": format!("minus-{ns}")}, "rules": without(&cluster_role, !in_role)}));
        let removed = if in_role { &role[i] } else { &cluster_role[i] };
        let start = Instant::now();
        let denied = loop {
            // The authorizer's informers take a moment to see the new rules.
            std::thread::sleep(Duration::from_millis(300));
            let denied = needs.iter().find(|n| !can(c, &minus, n));
            if denied.is_some() || start.elapsed() > Duration::from_secs(5) {
                break denied;
            }
        };
        assert!(
            denied.is_some(),
            "the rule {removed} is not needed: every request of the runs is allowed without it"
        );
    }
}

/// A kubeconfig with a fresh token of `account` (TokenRequest, as a projected token in the
/// CronJob's Pod).
fn token_kubeconfig(c: &Cluster, account: &str, file: &str) -> PathBuf {
    let token = c.kubectl_ok(&["create", "token", account, "--duration=2h"]);
    let path = c.tmp.path().join(file);
    std::fs::write(
        &path,
        kubeconfig(&c.plane.url, &c.plane.ca, token.trim(), &c.ns),
    )
    .unwrap();
    path
}

/// Suite 5: least privilege proven by the real authorizer. The CronJob `install` renders runs
/// its exact command (Git pushed to a bare repository through a `file://` URL) with a token of
/// its ServiceAccount from day 1 to day 2: every run succeeds, creates included (server-side
/// apply creating an object is authorized as `patch` and `create`). Pull mode's read-only Role
/// suffices for its command too.
#[test]
fn least_privilege_cronjob_runs_with_its_service_account_token() {
    let Some(mut r) = Rollout::new("rbac") else {
        return;
    };
    let bare = r.c.tmp.path().join("remote.git");
    run_ok(
        Command::new("git")
            .args(["init", "--bare", "-q"])
            .arg(&bare),
    );
    let url = format!("file://{}", bare.display());
    let (args, account, role, cluster_role) = install(&r, &url, false);
    assert!(args.iter().any(|a| a == "--apply"), "{args:?}");
    r.kubeconfig = token_kubeconfig(&r.c, &account, "sa.kubeconfig");
    for (now, g) in [(D1, G1), (D2, G2)] {
        let run = r.settle_with(now, || {
            let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
            a.extend(["--now", now]);
            r.checked(now, r.snaproll_run(&a))
        });
        assert_eq!(run.states(), [format!("{g} serving")], "{}", run.stdout);
    }
    // Every request the ServiceAccount made was allowed.
    let sa_user = format!("system:serviceaccount:{}:{account}", r.c.ns);
    let denied: Vec<String> =
        r.c.plane
            .audit(&sa_user)
            .iter()
            .filter(|a| a.code() == 403)
            .map(Audit::line)
            .collect();
    assert!(denied.is_empty(), "{denied:#?}");
    // And none of it is more than needed.
    let push_needs = needs(&r.c, &sa_user, 0);
    every_rule_is_needed(&r.c, &push_needs, &role, &cluster_role);

    // Pull mode: only commits (to a fresh remote) and reads the cluster.
    let bare = r.c.tmp.path().join("pull.git");
    run_ok(
        Command::new("git")
            .args(["init", "--bare", "-q"])
            .arg(&bare),
    );
    let url = format!("file://{}", bare.display());
    let (args, account, role, _) = install(&r, &url, true);
    let pull_user = format!("system:serviceaccount:{}:{account}", r.c.ns);
    let before = r.c.plane.audit(&pull_user).len();
    assert!(!args.iter().any(|a| a == "--apply"), "{args:?}");
    r.kubeconfig = token_kubeconfig(&r.c, &account, "pull.kubeconfig");
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.extend(["--now", D3]);
    let run = r.snaproll_run(&a);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    every_rule_is_needed(&r.c, &needs(&r.c, &pull_user, before), &role, &Value::Null);
}
