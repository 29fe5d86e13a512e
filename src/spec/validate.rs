//! The semantic checks made after a spec parsed: names, sizes, cross-field rules, warnings.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::names::shown;
use super::positions::Positions;
use super::*;

/// Collects errors and warnings with their positions.
pub(super) struct Validator<'a> {
    pub(super) file: &'a str,
    pub(super) positions: &'a Positions,
    /// Whether strings may hold characters that are not portable (see [`unportable`]).
    pub(super) scan_text: bool,
    pub(super) errors: Vec<Issue>,
    pub(super) warnings: Vec<Issue>,
}

impl Validator<'_> {
    /// Field paths are [`fmt::Display`] values (`format_args!`), made into text only here:
    /// building each checked field's path up front was 13 M instructions of a large spec.
    fn issue(&self, field: &dyn fmt::Display, message: String) -> Issue {
        let field = field.to_string();
        Issue {
            file: self.file.to_string(),
            pos: self.positions.find(&field),
            field,
            message,
        }
    }

    fn error(&mut self, field: &dyn fmt::Display, message: impl Into<String>) {
        let issue = self.issue(field, message.into());
        self.errors.push(issue);
    }

    /// An error about a map entry: located by `lookup` (the entry's full path, whose key may
    /// be long or hold any character), named as `field` (its map).
    fn error_at(&mut self, lookup: &dyn fmt::Display, field: &dyn fmt::Display, message: String) {
        let mut issue = self.issue(lookup, message);
        issue.field = field.to_string();
        self.errors.push(issue);
    }

    fn warn(&mut self, field: &dyn fmt::Display, message: impl Into<String>) {
        let issue = self.issue(field, message.into());
        self.warnings.push(issue);
    }

    pub(super) fn rollout(&mut self, r: &Rollout) {
        if r.api_version != API_VERSION {
            self.error(
                &"apiVersion",
                format!(
                    "unsupported apiVersion `{}`; this snaproll reads `{API_VERSION}`",
                    r.api_version
                ),
            );
        }
        if r.kind != KIND {
            self.error(
                &"kind",
                format!("unsupported kind `{}`; expected `{KIND}`", r.kind),
            );
        }
        if self.scan_text
            && let Ok(doc) = serde_json::to_value(r)
        {
            self.portable_strings(String::new(), &doc);
        }
        self.dns_label(&"metadata.name", &r.metadata.name);
        self.dns_label(&"metadata.namespace", &r.metadata.namespace);
        for (map, values_are_labels) in [("labels", true), ("annotations", false)] {
            let entries = if values_are_labels {
                &r.metadata.labels
            } else {
                &r.metadata.annotations
            };
            for (key, value) in entries {
                let field = format!("metadata.{map}.{key}");
                if let Err(why) = check_qualified_name(key) {
                    self.error(&format!("metadata.{map}"), why);
                } else if values_are_labels && let Err(why) = check_label_value(value) {
                    self.error(&field, why);
                }
            }
        }
        self.snapshot_class(&r.spec.snapshot_class);
        if r.spec.datasets.is_empty() {
            self.error(
                &"spec.datasets",
                "at least one dataset is required (the list is empty)",
            );
        }
        let mut dataset_names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut consumer_names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, d) in r.spec.datasets.iter().enumerate() {
            let at = format_args!("spec.datasets[{i}]");
            if let Some(first) = dataset_names.insert(&d.name, i) {
                dataset_names.insert(&d.name, first);
                self.error(
                    &format_args!("{at}.name"),
                    format!(
                        "duplicate dataset name `{}` (already used by spec.datasets[{first}]); dataset names must be unique",
                        d.name
                    ),
                );
            }
            if let Some(first) = consumer_names.insert(&d.consumer.name, i) {
                consumer_names.insert(&d.consumer.name, first);
                self.error(
                    &format_args!("{at}.consumer.name"),
                    format!(
                        "duplicate consumer name `{}` (already used by spec.datasets[{first}]); its Service and StatefulSets would collide",
                        d.consumer.name
                    ),
                );
            }
            self.dataset(&at, d, &r.spec.snapshot_class);
        }
    }

    fn snapshot_class(&mut self, c: &SnapshotClassSpec) {
        self.dns_subdomain(&"spec.snapshotClass.name", &c.name);
        match (&c.driver, c.existing) {
            (None, false) => self.error(
                &"spec.snapshotClass.driver",
                "missing required field `driver` (the CSI driver, e.g. pd.csi.storage.gke.io or ebs.csi.aws.com), or set `existing: true` to use a class that already exists",
            ),
            (Some(d), _) => self.dns_subdomain(&"spec.snapshotClass.driver", d),
            (None, true) => {}
        }
        for key in c.parameters.keys() {
            if key.is_empty() {
                self.error(
                    &"spec.snapshotClass.parameters",
                    "parameter names must not be empty",
                );
            }
        }
        if c.deletion_policy == DeletionPolicy::Retain {
            self.warn(
                &"spec.snapshotClass.deletionPolicy",
                "with Retain, retired snapshots stay in the storage backend (and on the bill) until deleted by hand",
            );
        }
    }

    fn dataset(&mut self, at: &dyn fmt::Display, d: &Dataset, class: &SnapshotClassSpec) {
        self.dns_label(&format_args!("{at}.name"), &d.name);
        self.storage(&format_args!("{at}.storage"), &d.storage);
        self.producer(&format_args!("{at}.producer"), &d.producer);
        if let Some(pin) = &d.generations.pin {
            self.dns_label(&format_args!("{at}.generations.pin"), pin);
        }
        if d.generations.keep == 0 {
            self.error(
                &format_args!("{at}.generations.keep"),
                "must be at least 1 (the serving generation is always kept)",
            );
        }
        if let Err(why) = parse_timeout(&d.snapshot.timeout) {
            self.error(&format_args!("{at}.snapshot.timeout"), why);
        }
        if !(1..=MAX_SNAPSHOT_COPIES).contains(&d.snapshot.copies) {
            self.error(
                &format_args!("{at}.snapshot.copies"),
                format!(
                    "{} is out of range; use 1 to {MAX_SNAPSHOT_COPIES} snapshots per generation",
                    d.snapshot.copies
                ),
            );
        }
        self.consumer(&format_args!("{at}.consumer"), d, class);
    }

    fn storage(&mut self, at: &dyn fmt::Display, s: &Storage) {
        if let Some(sc) = &s.storage_class_name {
            self.dns_subdomain(&format_args!("{at}.storageClassName"), sc);
        }
        match quantity::parse(&s.size) {
            Ok(q) if q.is_positive() && s.size.bytes().all(|b| b.is_ascii_digit()) => {
                // A bare number is bytes: `size: 200` asks for a 200-byte volume, which the
                // provisioner rounds up to its minimum; nobody means that for a dataset.
                self.warn(
                    &format_args!("{at}.size"),
                    format!(
                        "`{0}` has no unit, so it means {0} bytes; did you mean {0}Gi?",
                        s.size
                    ),
                );
            }
            Ok(q) if q.is_positive() => {}
            Ok(_) => self.error(
                &format_args!("{at}.size"),
                format!("must be greater than zero (got `{}`)", s.size),
            ),
            Err(e) => self.error(&format_args!("{at}.size"), e.to_string()),
        }
        if s.access_modes.is_empty() {
            self.error(
                &format_args!("{at}.accessModes"),
                "at least one access mode is required (ReadWriteOnce, ReadOnlyMany, ReadWriteMany, ReadWriteOncePod)",
            );
        }
        let unique: BTreeSet<_> = s.access_modes.iter().collect();
        if unique.len() != s.access_modes.len() {
            self.error(
                &format_args!("{at}.accessModes"),
                "access modes must not repeat",
            );
        }
    }

    fn verify(&mut self, at: &dyn fmt::Display, d: &Dataset, v: &Verify) {
        self.image(&format_args!("{at}.image"), &v.image);
        if v.command.is_empty() {
            self.error(
                &format_args!("{at}.command"),
                "must name at least the program to run (e.g. [sha256sum, -c, /data/SHA256SUMS])",
            );
        }
        if let Err(why) = parse_timeout(&v.timeout) {
            self.error(&format_args!("{at}.timeout"), why);
        }
        // The Job controller labels its Pods `batch.kubernetes.io/job-name: <job>` (63 max).
        let job = d.name.len() + DATE_SUFFIX_LEN + VERIFY_SUFFIX.len();
        if job > MAX_JOB_NAME {
            self.error(
                at,
                format!(
                    "dataset name `{}` is {} characters; the verify Job `<dataset>-YYYY-MM-DD{VERIFY_SUFFIX}` would be {job} characters, over the {MAX_JOB_NAME} of its job-name label; use a dataset name of at most {} characters",
                    d.name,
                    d.name.len(),
                    MAX_JOB_NAME - DATE_SUFFIX_LEN - VERIFY_SUFFIX.len()
                ),
            );
        }
    }

    fn producer(&mut self, at: &dyn fmt::Display, p: &Producer) {
        self.image(&format_args!("{at}.image"), &p.image);
        self.env(&format_args!("{at}.env"), &p.env);
        self.resources(&format_args!("{at}.resources"), &p.resources);
        self.mount_path(&format_args!("{at}.mountPath"), &p.mount_path);
        if let Some(sa) = &p.service_account_name {
            self.dns_subdomain(&format_args!("{at}.serviceAccountName"), sa);
        }
        if p.active_deadline_seconds < 1 {
            self.error(
                &format_args!("{at}.activeDeadlineSeconds"),
                format!(
                    "must be at least 1 second (got {}); the default is {} (12h)",
                    p.active_deadline_seconds, DEFAULT_ACTIVE_DEADLINE_SECONDS
                ),
            );
        }
        if p.max_restarts < 0 {
            self.error(
                &format_args!("{at}.maxRestarts"),
                format!(
                    "must be 0 or more (got {}); the default is {DEFAULT_MAX_RESTARTS}",
                    p.max_restarts
                ),
            );
        }
        let selector_at = format_args!("{at}.nodeSelector");
        for (key, value) in &p.node_selector {
            let path = format_args!("{selector_at}.{key}");
            if let Err(why) = check_qualified_name(key) {
                self.error_at(&path, &selector_at, format!("key {why}"));
            } else if let Err(why) = check_label_value(value) {
                self.error_at(&path, &path, format!("value of `{key}`: {why}"));
            }
        }
        for (i, t) in p.tolerations.iter().enumerate() {
            let f = format_args!("{at}.tolerations[{i}]");
            if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
                && let Err(why) = check_qualified_name(key)
            {
                self.error(&format!("{f}.key"), format!("key {why}"));
            }
            if let Some(value) = &t.value
                && let Err(why) = check_label_value(value)
            {
                self.error(&format!("{f}.value"), why);
            }
            if t.operator == Some(TolerationOperator::Exists) && t.value.is_some() {
                self.error(
                    &format!("{f}.value"),
                    "must be empty when operator is Exists",
                );
            }
            if t.key.is_none() && t.operator != Some(TolerationOperator::Exists) {
                self.error(
                    &format!("{f}.operator"),
                    "a toleration without a key must use operator Exists",
                );
            }
        }
    }

    fn consumer(&mut self, at: &dyn fmt::Display, d: &Dataset, class: &SnapshotClassSpec) {
        let c = &d.consumer;
        let name_at = format_args!("{at}.name");
        self.dns_label(&name_at, &c.name);
        if c.name.starts_with(|ch: char| ch.is_ascii_digit()) {
            // The consumer name is also the Service name, and Service names are RFC 1035 labels.
            self.error(
                &name_at,
                format!(
                    "consumer name `{}` must start with a letter: it names the Service, an RFC 1035 label",
                    c.name
                ),
            );
        }
        let max_base = MAX_STATEFULSET_NAME - DATE_SUFFIX_LEN;
        if c.name.len() > max_base {
            self.error(
                &name_at,
                format!(
                    "consumer name `{}` is {} characters; with the {}-character generation suffix (-YYYY-MM-DD) the StatefulSet name would be {} characters, over the {} that fit the controller-revision-hash label (63 max); use at most {} characters",
                    c.name,
                    c.name.len(),
                    DATE_SUFFIX_LEN,
                    c.name.len() + DATE_SUFFIX_LEN,
                    MAX_STATEFULSET_NAME,
                    max_base
                ),
            );
        }
        if let Some(v) = &c.verify {
            self.verify(&format_args!("{at}.verify"), d, v);
        }
        if c.replicas < 0 {
            self.error(
                &format_args!("{at}.replicas"),
                format!("must be 0 or more (got {})", c.replicas),
            );
        } else if c.replicas > i64::from(i32::MAX) {
            self.error(
                &format_args!("{at}.replicas"),
                format!("must be at most {} (got {})", i32::MAX, c.replicas),
            );
        }
        self.image(&format_args!("{at}.image"), &c.image);
        self.env(&format_args!("{at}.env"), &c.env);
        self.resources(&format_args!("{at}.resources"), &c.resources);
        self.mount_path(&format_args!("{at}.mountPath"), &c.mount_path);
        if let Some(claim) = &c.claim_name {
            self.dns_label(&format_args!("{at}.claimName"), claim);
        }
        let mut port_names = BTreeSet::new();
        for (i, p) in c.ports.iter().enumerate() {
            let f = format_args!("{at}.ports[{i}]");
            self.port_number(&format!("{f}.containerPort"), p.container_port);
            if let Some(n) = &p.name {
                self.port_name(&format!("{f}.name"), n);
                if !port_names.insert(n.as_str()) {
                    self.error(&format!("{f}.name"), format!("duplicate port name `{n}`"));
                }
            }
        }
        let mut svc_ports = BTreeSet::new();
        for (i, p) in c.service.ports.iter().enumerate() {
            let f = format_args!("{at}.service.ports[{i}]");
            self.port_number(&format!("{f}.port"), p.port);
            if !svc_ports.insert((p.port, p.protocol as u8)) {
                self.error(
                    &format!("{f}.port"),
                    format!("duplicate service port {}", p.port),
                );
            }
            if let Some(n) = &p.name {
                self.port_name(&format!("{f}.name"), n);
            } else if c.service.ports.len() > 1 {
                self.error(
                    &format!("{f}.name"),
                    "a name is required when the service has more than one port",
                );
            }
            match &p.target_port {
                Some(PortRef::Number(n)) => self.port_number(&format!("{f}.targetPort"), *n),
                Some(PortRef::Name(n)) if !port_names.contains(n.as_str()) => self.error(
                    &format!("{f}.targetPort"),
                    format!(
                        "names no consumer port: `{n}` (consumer ports: {})",
                        if port_names.is_empty() {
                            "none".to_string()
                        } else {
                            port_names.iter().copied().collect::<Vec<_>>().join(", ")
                        }
                    ),
                ),
                _ => {}
            }
        }
        if c.service.kind == ServiceKind::ClusterIP && c.service.ports.is_empty() {
            self.error(
                &format_args!("{at}.service.ports"),
                "a ClusterIP service needs at least one port (or use type Headless)",
            );
        }
        let images = class
            .parameters
            .get("snapshot-type")
            .is_some_and(|t| t == "images");
        let copies = i64::from(d.snapshot.copies.max(1));
        if class.driver.as_deref() == Some(GKE_PD_DRIVER)
            && c.replicas > i64::from(GKE_RESTORES_PER_HOUR) * copies
            && !images
        {
            let per_hour = i64::from(GKE_RESTORES_PER_HOUR);
            let need = (c.replicas + per_hour - 1) / per_hour;
            let or = if need <= i64::from(MAX_SNAPSHOT_COPIES) {
                format!(" (or snapshot.copies: {need})")
            } else {
                String::new()
            };
            let message = if copies == 1 {
                format!(
                    "{} replicas restore from one GKE PD snapshot, which allows about {per_hour} restores per hour; set `snapshot-type: images` in spec.snapshotClass.parameters{or}",
                    c.replicas
                )
            } else {
                format!(
                    "{} replicas restore from {copies} GKE PD snapshot copies, which allow about {} restores per hour; set `snapshot-type: images` in spec.snapshotClass.parameters{or}",
                    c.replicas,
                    per_hour * copies
                )
            };
            self.warn(&format_args!("{at}.replicas"), message);
        }
        if c.replicas > 1
            && !c.read_only
            && d.storage
                .access_modes
                .iter()
                .all(|m| *m == AccessMode::ReadWriteOncePod)
        {
            self.warn(
                &format_args!("{at}.readOnly"),
                "every replica gets its own copy of the snapshot; ReadWriteOncePod only limits each copy to one pod",
            );
        }
    }

    fn image(&mut self, field: &dyn fmt::Display, image: &str) {
        if image.trim().is_empty() {
            self.error(field, "must name a container image (it is empty)");
        } else if image.chars().any(char::is_whitespace) {
            self.error(
                field,
                format!("container image `{image}` must not contain white space"),
            );
        }
    }

    fn env(&mut self, at: &dyn fmt::Display, env: &[EnvVar]) {
        let mut seen = BTreeSet::new();
        for (i, e) in env.iter().enumerate() {
            let f = format_args!("{at}[{i}].name");
            if e.name.is_empty() || e.name.contains('=') || e.name.chars().any(char::is_control) {
                self.error(
                    &f,
                    format!(
                        "invalid environment variable name `{}` (must be non-empty, without `=`)",
                        e.name
                    ),
                );
            } else if !seen.insert(e.name.as_str()) {
                self.error(&f, format!("duplicate environment variable `{}`", e.name));
            }
        }
    }

    fn resources(&mut self, at: &dyn fmt::Display, r: &Resources) {
        for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (name, value) in map {
                let f = format_args!("{at}.{kind}.{name}");
                match quantity::parse(value) {
                    Ok(q) if q.is_negative() => {
                        self.error(&f, format!("must not be negative (got `{value}`)"))
                    }
                    Ok(_) => {}
                    Err(e) => self.error(&f, e.to_string()),
                }
            }
        }
        for (name, request) in &r.requests {
            if let (Some(limit), Ok(rq)) = (r.limits.get(name), quantity::parse(request))
                && let Ok(lq) = quantity::parse(limit)
                && rq > lq
            {
                self.error(
                    &format_args!("{at}.requests.{name}"),
                    format!("request {request} is above the limit {limit}"),
                );
            }
        }
    }

    fn mount_path(&mut self, field: &dyn fmt::Display, path: &str) {
        if !path.starts_with('/') {
            self.error(field, format!("must be an absolute path (got `{path}`)"));
        } else if path.split('/').any(|c| c == "..") {
            self.error(field, format!("must not contain `..` (got `{path}`)"));
        }
    }

    fn port_number(&mut self, field: &dyn fmt::Display, n: i64) {
        if !(1..=65535).contains(&n) {
            self.error(
                field,
                format!("must be a port number from 1 to 65535 (got {n})"),
            );
        }
    }

    fn port_name(&mut self, field: &dyn fmt::Display, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 15
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && name.chars().any(|c| c.is_ascii_lowercase())
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--");
        if !ok {
            self.error(
                field,
                format!(
                    "invalid port name `{name}`: at most 15 lower-case letters, digits and single dashes, with at least one letter"
                ),
            );
        }
    }

    /// Refuses, in every string and key of the spec, the characters that would not reach the
    /// cluster unchanged through every YAML reader (see [`unportable`]).
    fn portable_strings(&mut self, path: String, v: &serde_json::Value) {
        use serde_json::Value;
        let problem = |s: &str| {
            s.chars().find(|&c| unportable(c)).map(|c| {
                let why = if c == '\u{85}' {
                    "YAML 1.1 readers (go-yaml in kubectl, kustomize, Argo CD and Flux) read it as a line break, so the cluster would get another value"
                } else {
                    "kubectl kustomize (and so Argo CD and Flux) refuses any YAML holding it, even escaped"
                };
                format!("`{}` contains U+{:04X}: {why}", shown(s), c as u32)
            })
        };
        match v {
            Value::String(s) => {
                if let Some(message) = problem(s) {
                    self.error(&path, message);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.portable_strings(format!("{path}[{i}]"), item);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    let at = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if let Some(message) = problem(key) {
                        self.error_at(&at, &path, format!("key {message}"));
                    }
                    self.portable_strings(at, item);
                }
            }
            _ => {}
        }
    }

    fn dns_label(&mut self, field: &dyn fmt::Display, name: &str) {
        if let Err(why) = check_dns_label(name) {
            self.error(field, why);
        }
    }

    fn dns_subdomain(&mut self, field: &dyn fmt::Display, name: &str) {
        if let Err(why) = check_dns_subdomain(name) {
            self.error(field, why);
        }
    }
}
