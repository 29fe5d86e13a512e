//! A small RBAC evaluator, to prove the rules right (test support: not in the product).
//!
//! [`check`] evaluates requests against rules the way the API server's RBAC authorizer does
//! (verbs, API groups, resources, resource names, namespace scope), which lets the tests replay
//! the request log of a real engine run against the rendered Role: every request must be allowed
//! (sufficient) and every granted verb on every resource must be used by some request (minimal).

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::install::{InstallKind, InstallObject};

/// One authorization request, as the API server's RBAC authorizer sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    /// RBAC verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Resource, with `/subresource` appended when there is one (`statefulsets/status`).
    pub resource: String,
    /// `None` for cluster-scoped resources and for lists across all namespaces.
    pub namespace: Option<String>,
    /// `None` for list, watch, deletecollection and POST create.
    pub name: Option<String>,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)?;
        if let Some(n) = &self.name {
            write!(f, " {n}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in {ns}"),
            None => write!(f, " (cluster)"),
        }
    }
}

impl Request {
    /// The request an HTTP call to the API makes: `method` and `path_and_query` as sent, e.g.
    /// `PATCH /apis/apps/v1/namespaces/ns/statefulsets/s?fieldManager=snaproll`. `None` for paths
    /// outside the resource API (discovery, `/version`). A server-side apply that creates the
    /// object is authorized as `patch` *and* `create`: use [`Request::as_create`] for that.
    pub fn from_http(method: &str, path_and_query: &str) -> Option<Request> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            _ => (None, rest),
        };
        let (resource, name, sub) = match rest {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(name.to_string()), None),
            [resource, name, sub] => (*resource, Some(name.to_string()), Some(*sub)),
            _ => return None,
        };
        let watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let verb = match (method.to_ascii_uppercase().as_str(), name.is_some()) {
            ("GET", _) if watch => "watch",
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => return None,
        };
        Some(Request {
            verb: verb.to_string(),
            group: group.to_string(),
            resource: match sub {
                Some(s) => format!("{resource}/{s}"),
                None => resource.to_string(),
            },
            namespace,
            name,
        })
    }

    /// The `create` check the API server adds when a server-side apply creates the object.
    pub fn as_create(&self) -> Request {
        Request {
            verb: "create".to_string(),
            ..self.clone()
        }
    }
}

/// Rules and where they apply: a Role's rules in its namespace, a ClusterRole's everywhere.
#[derive(Clone, Debug)]
pub struct Grant {
    /// `Some(ns)` for a Role bound by a RoleBinding in `ns`; `None` for a ClusterRole bound by a
    /// ClusterRoleBinding.
    pub namespace: Option<String>,
    pub rules: Vec<PolicyRule>,
}

/// The outcome of checking requests against grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Requests no rule allows: the rules are insufficient.
    pub denied: Vec<Request>,
    /// Permissions (`verb group/resource [names]`) no request used: the rules are not minimal.
    pub unused: Vec<String>,
}

impl Report {
    /// Whether every request was allowed and every permission used.
    pub fn is_exact(&self) -> bool {
        self.denied.is_empty() && self.unused.is_empty()
    }
}

fn matches(list: Option<&Vec<String>>, value: &str) -> bool {
    list.is_some_and(|l| l.iter().any(|x| x == "*" || x == value))
}

/// Whether `rule` allows `req`, by the RBAC authorizer's rule-matching semantics.
pub fn rule_allows(rule: &PolicyRule, req: &Request) -> bool {
    rule.verbs.iter().any(|v| v == "*" || *v == req.verb)
        && matches(rule.api_groups.as_ref(), &req.group)
        && matches(rule.resources.as_ref(), &req.resource)
        && match rule.resource_names.as_deref() {
            None | Some([]) => true,
            Some(names) => req.name.as_ref().is_some_and(|n| names.contains(n)),
        }
}

fn grant_applies(grant: &Grant, req: &Request) -> bool {
    match &grant.namespace {
        None => true,
        Some(ns) => req.namespace.as_ref() == Some(ns),
    }
}

/// Whether any grant allows `req`.
pub fn allowed(grants: &[Grant], req: &Request) -> bool {
    grants
        .iter()
        .any(|g| grant_applies(g, req) && g.rules.iter().any(|r| rule_allows(r, req)))
}

/// Every permission a rule grants, spelled `verb group/resource [names]`.
fn permissions(rule: &PolicyRule) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                out.push((verb.clone(), group.clone(), resource.clone()));
            }
        }
    }
    out
}

/// Checks `requests` against `grants`: which requests are denied, and which granted permission
/// (each verb on each resource of each rule) no allowed request used.
pub fn check(grants: &[Grant], requests: &[Request]) -> Report {
    let denied: BTreeSet<Request> = requests
        .iter()
        .filter(|r| !allowed(grants, r))
        .cloned()
        .collect();
    let mut unused = Vec::new();
    for grant in grants {
        for rule in &grant.rules {
            for (verb, group, resource) in permissions(rule) {
                let narrowed = PolicyRule {
                    verbs: vec![verb.clone()],
                    api_groups: Some(vec![group.clone()]),
                    resources: Some(vec![resource.clone()]),
                    ..rule.clone()
                };
                let used = requests
                    .iter()
                    .any(|r| grant_applies(grant, r) && rule_allows(&narrowed, r));
                if !used {
                    let group = if group.is_empty() {
                        "core".to_string()
                    } else {
                        group
                    };
                    let names = match rule.resource_names.as_deref() {
                        None | Some([]) => String::new(),
                        Some(n) => format!(" {}", n.join(",")),
                    };
                    unused.push(format!("{verb} {group}/{resource}{names}"));
                }
            }
        }
    }
    Report {
        denied: denied.into_iter().collect(),
        unused,
    }
}

/// The RBAC grants the rendered objects give the ServiceAccount (for [`check`]).
pub fn grants(objects: &[InstallObject]) -> Vec<Grant> {
    objects
        .iter()
        .filter(|o| matches!(o.kind, InstallKind::Role | InstallKind::ClusterRole))
        .map(|o| Grant {
            namespace: o.namespace.clone(),
            rules: serde_json::from_value(o.value["rules"].clone()).unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::rbac::*;

    fn req(
        verb: &str,
        group: &str,
        resource: &str,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Request {
        Request {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
        }
    }

    #[test]
    fn push_mode_may_list_and_create_events_and_nothing_more_pull_mode_none() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/gke-daily/snaproll.yaml"
        ))
        .unwrap();
        let rollout = crate::spec::parse_str("s.yaml", &text).unwrap().rollout;
        let events = |rules: &[PolicyRule]| -> Vec<PolicyRule> {
            rules
                .iter()
                .filter(|r| {
                    r.resources
                        .as_deref()
                        .is_some_and(|res| res.iter().any(|x| x == "events"))
                })
                .cloned()
                .collect()
        };
        let (push, _) = rules_for(&rollout, false);
        assert_eq!(
            events(&push),
            [rule(
                "events.k8s.io",
                vec!["events".into()],
                &["create", "list"],
                None
            )]
        );
        let (pull, _) = rules_for(&rollout, true);
        assert!(events(&pull).is_empty());
        let grants = [Grant {
            namespace: Some("default".into()),
            rules: push,
        }];
        for (method, path) in [
            ("POST", "/apis/events.k8s.io/v1/namespaces/default/events"),
            ("GET", "/apis/events.k8s.io/v1/namespaces/default/events"),
        ] {
            let r = Request::from_http(method, path).unwrap();
            assert!(
                check(&grants, std::slice::from_ref(&r)).denied.is_empty(),
                "{r}"
            );
        }
        for (method, path) in [
            ("GET", "/apis/events.k8s.io/v1/namespaces/default/events/e"),
            (
                "PATCH",
                "/apis/events.k8s.io/v1/namespaces/default/events/e",
            ),
            (
                "DELETE",
                "/apis/events.k8s.io/v1/namespaces/default/events/e",
            ),
            ("POST", "/api/v1/namespaces/default/events"),
            ("POST", "/apis/events.k8s.io/v1/namespaces/other/events"),
        ] {
            let r = Request::from_http(method, path).unwrap();
            assert_eq!(
                check(&grants, std::slice::from_ref(&r)).denied.len(),
                1,
                "{r}"
            );
        }
    }

    #[test]
    fn http_requests_map_to_rbac_verbs() {
        let r = Request::from_http(
            "PATCH",
            "/apis/apps/v1/namespaces/ns/statefulsets/consumer-1?fieldManager=snaproll&force=false",
        )
        .unwrap();
        assert_eq!(
            r,
            req(
                "patch",
                "apps",
                "statefulsets",
                Some("ns"),
                Some("consumer-1")
            )
        );
        assert_eq!(r.as_create().verb, "create");
        let list = Request::from_http(
            "GET",
            "/api/v1/namespaces/ns/pods?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dsnaproll",
        )
        .unwrap();
        assert_eq!(list, req("list", "", "pods", Some("ns"), None));
        let watch = Request::from_http("GET", "/api/v1/namespaces/ns/pods?watch=true").unwrap();
        assert_eq!(watch.verb, "watch");
        let class = Request::from_http(
            "DELETE",
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses/c",
        )
        .unwrap();
        assert_eq!(
            class,
            req(
                "delete",
                "snapshot.storage.k8s.io",
                "volumesnapshotclasses",
                None,
                Some("c")
            )
        );
        let status =
            Request::from_http("GET", "/apis/apps/v1/namespaces/ns/statefulsets/s/status").unwrap();
        assert_eq!(status.resource, "statefulsets/status");
        assert_eq!(
            Request::from_http("DELETE", "/api/v1/namespaces/ns/persistentvolumeclaims")
                .unwrap()
                .verb,
            "deletecollection"
        );
        assert!(Request::from_http("GET", "/version").is_none());
        assert!(Request::from_http("GET", "/apis").is_none());
    }

    #[test]
    fn namespace_names_and_wildcards_are_honoured() {
        let role = Grant {
            namespace: Some("ns".into()),
            rules: vec![
                rule("", vec!["pods".into()], &["get", "list"], None),
                rule(
                    "",
                    vec!["secrets".into()],
                    &["get"],
                    Some(vec!["only".into()]),
                ),
            ],
        };
        let grants = [role];
        assert!(allowed(
            &grants,
            &req("get", "", "pods", Some("ns"), Some("p"))
        ));
        assert!(!allowed(
            &grants,
            &req("get", "", "pods", Some("other"), Some("p"))
        ));
        assert!(!allowed(
            &grants,
            &req("delete", "", "pods", Some("ns"), Some("p"))
        ));
        assert!(!allowed(
            &grants,
            &req("get", "apps", "pods", Some("ns"), Some("p"))
        ));
        assert!(allowed(
            &grants,
            &req("get", "", "secrets", Some("ns"), Some("only"))
        ));
        assert!(!allowed(
            &grants,
            &req("get", "", "secrets", Some("ns"), Some("git"))
        ));
        // resourceNames never match a request without a name (list, POST create).
        assert!(!allowed(
            &grants,
            &req("list", "", "secrets", Some("ns"), None)
        ));
        // A subresource is its own resource.
        assert!(!allowed(
            &grants,
            &req("get", "", "pods/log", Some("ns"), Some("p"))
        ));
        let cluster = Grant {
            namespace: None,
            rules: vec![rule("*", vec!["*".into()], &["*"], None)],
        };
        assert!(allowed(
            &[cluster],
            &req("delete", "x", "y", None, Some("z"))
        ));
    }

    #[test]
    fn report_lists_denied_and_unused_permissions() {
        let grants = [Grant {
            namespace: Some("ns".into()),
            rules: vec![rule(
                "",
                vec!["pods".into(), "services".into()],
                &["list", "delete"],
                None,
            )],
        }];
        let requests = [
            req("list", "", "pods", Some("ns"), None),
            req("list", "", "services", Some("ns"), None),
            req("delete", "", "pods", Some("ns"), Some("p")),
            req("patch", "", "pods", Some("ns"), Some("p")),
        ];
        let report = check(&grants, &requests);
        assert_eq!(
            report.denied,
            vec![req("patch", "", "pods", Some("ns"), Some("p"))]
        );
        assert_eq!(report.unused, vec!["delete core/services".to_string()]);
        assert!(!report.is_exact());
        let exact = check(
            &grants,
            &[
                requests[0].clone(),
                requests[1].clone(),
                requests[2].clone(),
                req("delete", "", "services", Some("ns"), Some("s")),
            ],
        );
        assert!(exact.is_exact(), "{exact:?}");
    }
}
