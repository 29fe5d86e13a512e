//! The install objects: their kinds, the rendered and validated objects, and the checks
//! every rendered object passes before anything is printed or applied.

use std::fmt;

use serde_json::{Value, json};

use super::MAX_CRONJOB_NAME;
use crate::{schema, spec};

/// The kinds `install` renders, in apply order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum InstallKind {
    ServiceAccount,
    ConfigMap,
    Role,
    RoleBinding,
    ClusterRole,
    ClusterRoleBinding,
    CronJob,
}

impl InstallKind {
    pub(super) fn from_kind(kind: &str) -> Option<InstallKind> {
        use InstallKind::*;
        [
            ServiceAccount,
            ConfigMap,
            Role,
            RoleBinding,
            ClusterRole,
            ClusterRoleBinding,
            CronJob,
        ]
        .into_iter()
        .find(|k| k.as_str() == kind)
    }

    /// The `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            InstallKind::ServiceAccount => "ServiceAccount",
            InstallKind::ConfigMap => "ConfigMap",
            InstallKind::Role => "Role",
            InstallKind::RoleBinding => "RoleBinding",
            InstallKind::ClusterRole => "ClusterRole",
            InstallKind::ClusterRoleBinding => "ClusterRoleBinding",
            InstallKind::CronJob => "CronJob",
        }
    }

    pub(super) fn api_version(self) -> &'static str {
        match self {
            InstallKind::ServiceAccount | InstallKind::ConfigMap => "v1",
            InstallKind::CronJob => "batch/v1",
            _ => "rbac.authorization.k8s.io/v1",
        }
    }

    /// Resource name used in API paths.
    pub fn plural(self) -> &'static str {
        match self {
            InstallKind::ServiceAccount => "serviceaccounts",
            InstallKind::ConfigMap => "configmaps",
            InstallKind::Role => "roles",
            InstallKind::RoleBinding => "rolebindings",
            InstallKind::ClusterRole => "clusterroles",
            InstallKind::ClusterRoleBinding => "clusterrolebindings",
            InstallKind::CronJob => "cronjobs",
        }
    }

    pub(super) fn namespaced(self) -> bool {
        !matches!(
            self,
            InstallKind::ClusterRole | InstallKind::ClusterRoleBinding
        )
    }
}

impl fmt::Display for InstallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rendered, validated install object.
#[derive(Clone, Debug, PartialEq)]
pub struct InstallObject {
    pub kind: InstallKind,
    pub namespace: Option<String>,
    pub name: String,
    pub value: Value,
    /// Canonical YAML (see [`crate::yaml`]).
    pub yaml: String,
}

impl InstallObject {
    /// `<order>-<kind>-<name>.yaml`, so a directory lists in apply order.
    pub fn file_name(&self) -> String {
        format!(
            "{:02}-{}-{}.yaml",
            (self.kind as usize + 1) * 10,
            self.kind.as_str().to_ascii_lowercase(),
            self.name
        )
    }
}

impl InstallObject {
    /// The object as the apply engine takes it ([`crate::apply::Manager::apply_named`]).
    pub fn to_named(&self) -> crate::apply::NamedObject {
        let (group, version) = match self.kind.api_version().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.kind.api_version()),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, self.kind.as_str());
        crate::apply::NamedObject {
            resource: kube::api::ApiResource::from_gvk_with_plural(&gvk, self.kind.plural()),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            value: self.value.clone(),
        }
    }
}

/// Every install object as one multi-document YAML stream.
pub fn to_yaml_stream(objects: &[InstallObject]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&o.yaml);
    }
    out
}

/// Identity and validation of one rendered install object.
pub(super) fn validate(value: &Value) -> Result<(InstallKind, Option<String>, String), String> {
    let kind_str = value
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("missing `kind`")?;
    let kind = InstallKind::from_kind(kind_str)
        .ok_or_else(|| format!("kind `{kind_str}` is not an install kind"))?;
    if value.get("apiVersion").and_then(Value::as_str) != Some(kind.api_version()) {
        return Err(format!(
            "apiVersion must be `{}` for {kind}",
            kind.api_version()
        ));
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or("missing `metadata.name`")?
        .to_string();
    spec::check_dns_subdomain(&name).map_err(|e| format!("metadata.name: {e}"))?;
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    match (kind.namespaced(), &namespace) {
        (true, None) => return Err(format!("{kind} `{name}` needs `metadata.namespace`")),
        (false, Some(_)) => {
            return Err(format!(
                "{kind} `{name}` is cluster-scoped and must not set `metadata.namespace`"
            ));
        }
        _ => {}
    }
    if let Some(labels) = value.pointer("/metadata/labels") {
        let labels = labels
            .as_object()
            .ok_or("metadata.labels must be a mapping")?;
        for (k, v) in labels {
            schema::check_label_key(k).map_err(|e| format!("metadata.labels: {e}"))?;
            schema::check_label_value(v.as_str().unwrap_or("\u{0}"))
                .map_err(|e| format!("metadata.labels.{k}: {e}"))?;
        }
    }
    use k8s_openapi::api::{batch, core, rbac as r};
    match kind {
        InstallKind::ServiceAccount => schema::round_trip::<core::v1::ServiceAccount>(value),
        InstallKind::ConfigMap => schema::round_trip::<core::v1::ConfigMap>(value),
        InstallKind::Role => schema::round_trip::<r::v1::Role>(value),
        InstallKind::RoleBinding => schema::round_trip::<r::v1::RoleBinding>(value),
        InstallKind::ClusterRole => schema::round_trip::<r::v1::ClusterRole>(value),
        InstallKind::ClusterRoleBinding => schema::round_trip::<r::v1::ClusterRoleBinding>(value),
        InstallKind::CronJob => schema::round_trip::<batch::v1::CronJob>(value),
    }?;
    match kind {
        InstallKind::CronJob => {
            if name.len() > MAX_CRONJOB_NAME {
                return Err(format!(
                    "CronJob name `{name}` is {} characters, over {MAX_CRONJOB_NAME}",
                    name.len()
                ));
            }
            check_cronjob(value)?;
        }
        InstallKind::Role | InstallKind::ClusterRole => check_rules(value)?,
        _ => {}
    }
    Ok((kind, namespace, name))
}

/// The properties the issue promises of the CronJob, checked on the rendered object so that a
/// template edit cannot silently drop one.
fn check_cronjob(v: &Value) -> Result<(), String> {
    let at = |p: &str| v.pointer(p);
    if at("/spec/concurrencyPolicy") != Some(&json!("Forbid")) {
        return Err("spec.concurrencyPolicy must be Forbid: two runs must never overlap".into());
    }
    let pod = "/spec/jobTemplate/spec/template/spec";
    if at(&format!("{pod}/securityContext/runAsNonRoot")) != Some(&json!(true)) {
        return Err("the Pod must set securityContext.runAsNonRoot: true".into());
    }
    let containers = at(&format!("{pod}/containers"))
        .and_then(Value::as_array)
        .ok_or("the Pod has no containers")?;
    for c in containers {
        let cname = c["name"].as_str().unwrap_or("?");
        if c.pointer("/securityContext/readOnlyRootFilesystem") != Some(&json!(true)) {
            return Err(format!(
                "container `{cname}` must set securityContext.readOnlyRootFilesystem: true"
            ));
        }
        if c.pointer("/securityContext/allowPrivilegeEscalation") != Some(&json!(false)) {
            return Err(format!(
                "container `{cname}` must set securityContext.allowPrivilegeEscalation: false"
            ));
        }
        for r in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                if c.pointer(&format!("/resources/{r}/{res}")).is_none() {
                    return Err(format!("container `{cname}` needs resources.{r}.{res}"));
                }
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let ename = e["name"].as_str().unwrap_or("?");
            let secretish = ["TOKEN", "PASSWORD", "SECRET", "KEY"]
                .iter()
                .any(|w| ename.to_ascii_uppercase().contains(w));
            if secretish && e.get("value").is_some() {
                return Err(format!(
                    "container `{cname}` env {ename} must come from a Secret (valueFrom.secretKeyRef), never a literal value"
                ));
            }
        }
    }
    Ok(())
}

/// Rules must name their verbs, groups and resources: no wildcards, no non-resource URLs.
fn check_rules(v: &Value) -> Result<(), String> {
    let rules = v["rules"].as_array().ok_or("rules must be a list")?;
    for (i, rule) in rules.iter().enumerate() {
        for field in ["verbs", "apiGroups", "resources"] {
            let items = rule[field]
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("rules[{i}].{field} must be a non-empty list"))?;
            if items.iter().any(|x| x == "*") {
                return Err(format!("rules[{i}].{field} must not use `*`"));
            }
        }
        if rule.get("nonResourceURLs").is_some() {
            return Err(format!("rules[{i}] must not grant nonResourceURLs"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cronjob_checks_catch_regressions() {
        let ok = json!({"spec": {"concurrencyPolicy": "Forbid", "jobTemplate": {"spec": {"template": {"spec": {
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "c",
                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
                "resources": {"requests": {"cpu": "1", "memory": "1"}, "limits": {"cpu": "1", "memory": "1"}},
                "env": [{"name": "SNAPROLL_GIT_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}}]}]
        }}}}}});
        assert_eq!(check_cronjob(&ok), Ok(()));
        let mut v = ok.clone();
        v["spec"]["concurrencyPolicy"] = json!("Allow");
        assert!(check_cronjob(&v).unwrap_err().contains("Forbid"));
        let mut v = ok.clone();
        v["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"][0] =
            json!({"name": "SNAPROLL_GIT_TOKEN", "value": "ghp_x"});
        assert!(check_cronjob(&v).unwrap_err().contains("Secret"));
        let mut v = ok;
        v["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] =
            json!({});
        assert!(check_cronjob(&v).unwrap_err().contains("limits.cpu"));
    }

    #[test]
    fn wildcard_rules_are_rejected() {
        let v = json!({"rules": [{"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}]});
        assert!(check_rules(&v).unwrap_err().contains("`*`"));
    }
}
