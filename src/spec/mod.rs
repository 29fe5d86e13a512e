//! The rollout spec: the user-facing contract (`docs/spec.md`), its parsing and its validation.
//!
//! Parsing is strict (unknown fields are errors, with a "did you mean" where a known field is
//! close) and every problem is reported with `file:line:column`, the field path and what would be
//! valid. Validation collects every problem rather than stopping at the first, so a user fixes a
//! spec in one round trip.

mod collect;
mod positions;
pub mod quantity;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize};

pub use positions::Pos;
use positions::Positions;

/// The only `apiVersion` this build understands.
pub const API_VERSION: &str = "snaproll.dev/v1alpha1";
/// The only `kind` this build understands.
pub const KIND: &str = "DatasetRollout";
/// Largest spec file accepted: far above any real rollout (10,000 datasets fit in a few MiB)
/// and small enough that a wrong file (a disk image, a log) is refused before it is parsed.
pub const MAX_SPEC_BYTES: u64 = 16 * 1024 * 1024;
/// Longest StatefulSet name: the controller appends a 10-character hash to it in the
/// `controller-revision-hash` label, whose value may be at most 63 characters.
pub const MAX_STATEFULSET_NAME: usize = 52;
/// Length of the default generation suffix `-YYYY-MM-DD`.
pub const DATE_SUFFIX_LEN: usize = 11;
/// Restores per hour GKE allows from one standard PD snapshot (`snapshot-type: snapshots`).
pub const GKE_RESTORES_PER_HOUR: i32 = 6;
/// The GKE persistent-disk CSI driver.
pub const GKE_PD_DRIVER: &str = "pd.csi.storage.gke.io";

/// A parsed, validated rollout document.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(
    title = "DatasetRollout",
    description = "A snaproll dataset rollout: datasets refreshed by a producer Pod, snapshotted, and restored into a generation-suffixed StatefulSet (docs/spec.md)."
)]
pub struct Rollout {
    #[schemars(extend("const" = API_VERSION))]
    pub api_version: String,
    #[schemars(extend("const" = KIND))]
    pub kind: String,
    pub metadata: Metadata,
    pub spec: RolloutSpec,
}

/// `metadata`: names the rollout (and its inventory) and the namespace of its objects.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Accepted so the spec can be kept (and labelled) like any Kubernetes document; they
    /// describe the spec file only and are not copied to the rendered objects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// As `labels`: accepted and validated, not rendered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".to_string()
}

/// `spec`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutSpec {
    pub snapshot_class: SnapshotClassSpec,
    pub datasets: Vec<Dataset>,
}

/// `spec.snapshotClass`: the VolumeSnapshotClass every snapshot names explicitly.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SnapshotClassSpec {
    pub name: String,
    /// CSI driver; required unless `existing` is true.
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Reference a class that already exists in the cluster instead of rendering one.
    #[serde(default)]
    pub existing: bool,
}

/// What happens to the storage snapshot when its VolumeSnapshot is deleted.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// One entry of `spec.datasets`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dataset {
    pub name: String,
    pub storage: Storage,
    pub producer: Producer,
    #[serde(default)]
    pub generations: GenerationPolicy,
    pub consumer: Consumer,
}

/// `storage`: the PVC the producer fills.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Storage {
    #[serde(default)]
    pub storage_class_name: Option<String>,
    pub size: String,
    #[serde(default = "default_access_modes")]
    pub access_modes: Vec<AccessMode>,
    #[serde(default)]
    pub volume_mode: VolumeMode,
}

fn default_access_modes() -> Vec<AccessMode> {
    vec![AccessMode::ReadWriteOnce]
}

/// PersistentVolume access modes.
#[derive(
    Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadOnlyMany,
    ReadWriteMany,
    ReadWriteOncePod,
}

/// PersistentVolume volume modes.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum VolumeMode {
    #[default]
    Filesystem,
    Block,
}

/// `producer`: the Pod that refreshes the data into the PVC, once per generation.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Producer {
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default = "default_mount_path")]
    pub mount_path: String,
    #[serde(default)]
    pub service_account_name: Option<String>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Rendered as the Pod's `activeDeadlineSeconds`: past it the kubelet fails the Pod
    /// (reason `DeadlineExceeded`), so a producer that hangs or keeps crashing under
    /// `restartPolicy: OnFailure` ends and its generation is marked failed.
    #[serde(default = "default_active_deadline_seconds")]
    pub active_deadline_seconds: i64,
    /// Container restarts after which a still-running producer counts as crash-looping and
    /// its generation failed, without waiting for the deadline.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: i64,
}

/// 12 hours: a refresh of tens of GB may take hours, but not a day.
pub const DEFAULT_ACTIVE_DEADLINE_SECONDS: i64 = 12 * 3600;
/// As a Job's default `backoffLimit`.
pub const DEFAULT_MAX_RESTARTS: i64 = 6;

fn default_active_deadline_seconds() -> i64 {
    DEFAULT_ACTIVE_DEADLINE_SECONDS
}

fn default_max_restarts() -> i64 {
    DEFAULT_MAX_RESTARTS
}

fn default_mount_path() -> String {
    "/data".to_string()
}

/// An environment variable with a literal value.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// Container resource requests and limits (resource name → quantity).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// A Pod toleration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// Toleration operators.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum TolerationOperator {
    Exists,
    Equal,
}

/// Taint effects.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// `generations`: when a new generation starts and how many are kept.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GenerationPolicy {
    #[serde(default)]
    pub schedule: Schedule,
    /// Ready generations kept (the serving one included); older ones retire.
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Serve this (kept) generation instead of the newest: a rollback that survives restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

impl Default for GenerationPolicy {
    fn default() -> Self {
        GenerationPolicy {
            schedule: Schedule::default(),
            keep: default_keep(),
            pin: None,
        }
    }
}

fn default_keep() -> u32 {
    1
}

/// When a new generation starts.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Schedule {
    /// Once per UTC day: the generation id is the date.
    #[default]
    Daily,
    /// Only when `--generation` names a new one.
    Manual,
}

/// `consumer`: the StatefulSet (one per generation) and its Service.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Consumer {
    pub name: String,
    #[serde(default = "default_replicas")]
    pub replicas: i64,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default = "default_mount_path")]
    pub mount_path: String,
    #[serde(default)]
    pub read_only: bool,
    /// Name of the volumeClaimTemplate; defaults to the dataset name.
    #[serde(default)]
    pub claim_name: Option<String>,
    #[serde(default)]
    pub pvc_retention_policy: RetentionPolicy,
    #[serde(default)]
    pub service: ServiceSpec,
    /// How the Service moves from one generation to the next.
    #[serde(default)]
    pub switch: Switch,
}

/// `consumer.switch`: what the Service selects while two generations run.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Switch {
    /// The Service selects the pods of every generation: during the overlap clients reach old
    /// and new data alike (the behaviour without a switch).
    #[default]
    Overlap,
    /// The Service selects only the serving generation's pods and moves to the new one in one
    /// apply once it is ready; the old generation retires only after the switch was applied.
    Atomic,
}

fn default_replicas() -> i64 {
    1
}

/// A container port.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: i64,
    #[serde(default)]
    pub protocol: Protocol,
}

/// Port protocols.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
    SCTP,
}

/// `persistentVolumeClaimRetentionPolicy` of the StatefulSet.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetentionPolicy {
    #[serde(default = "retention_delete")]
    pub when_deleted: Retention,
    #[serde(default = "retention_retain")]
    pub when_scaled: Retention,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            when_deleted: Retention::Delete,
            when_scaled: Retention::Retain,
        }
    }
}

fn retention_delete() -> Retention {
    Retention::Delete
}

fn retention_retain() -> Retention {
    Retention::Retain
}

/// A retention choice.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum Retention {
    Delete,
    Retain,
}

/// `consumer.service`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "type")]
    pub kind: ServiceKind,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
}

/// Service flavours: headless (as the article uses for a StatefulSet) or a ClusterIP.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum ServiceKind {
    #[default]
    Headless,
    ClusterIP,
}

/// A Service port.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<PortRef>,
    #[serde(default)]
    pub protocol: Protocol,
}

/// A port given by number or by container port name.
#[derive(Clone, Debug, Serialize, PartialEq, JsonSchema)]
#[serde(untagged)]
pub enum PortRef {
    Number(i64),
    Name(String),
}

impl<'de> Deserialize<'de> for PortRef {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or a container port name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRef, E> {
                Ok(PortRef::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRef, E> {
                i64::try_from(v)
                    .map(PortRef::Number)
                    .map_err(|_| E::custom("port number out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRef, E> {
                Ok(match v.parse::<i64>() {
                    Ok(n) => PortRef::Number(n),
                    Err(_) => PortRef::Name(v.to_string()),
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Dataset {
    /// Name of the consumer's volumeClaimTemplate.
    pub fn claim_name(&self) -> &str {
        self.consumer.claim_name.as_deref().unwrap_or(&self.name)
    }
}

/// One problem found in a spec, located in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub file: String,
    pub pos: Option<Pos>,
    /// Field path such as `spec.datasets[0].consumer.replicas` (empty for the whole document).
    pub field: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(p) = self.pos {
            write!(f, ":{p}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be opened or read.
    #[error("cannot read spec {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file, or standard input held more than [`MAX_SPEC_BYTES`].
    #[error(transparent)]
    Input(crate::input::InputError),
    /// The file is bigger than [`MAX_SPEC_BYTES`].
    #[error(
        "{path}: the file is {size} bytes, over the {MAX_SPEC_BYTES}-byte limit for a rollout spec"
    )]
    TooLarge { path: String, size: u64 },
    /// The file is not UTF-8 text (a binary or a wrongly encoded file).
    #[error("{path}: not a UTF-8 text file (invalid byte at offset {offset}); expected YAML")]
    NotText { path: String, offset: usize },
    /// The file holds no document.
    #[error("{path}: the file is empty; expected a {KIND} document (apiVersion: {API_VERSION})")]
    Empty { path: String },
    /// The document has problems; each is one located line.
    #[error("{}", summary(.issues))]
    Invalid { issues: Vec<Issue> },
}

/// Most problems printed for one spec: past that, a count (fixing the first usually fixes
/// several of the rest).
pub const MAX_SHOWN_ISSUES: usize = 20;

/// The lines printed for an invalid spec: one per problem, at most [`MAX_SHOWN_ISSUES`], then
/// "and N more problems".
pub fn issue_lines(issues: &[Issue]) -> Vec<String> {
    let mut lines: Vec<String> = issues
        .iter()
        .take(MAX_SHOWN_ISSUES)
        .map(Issue::to_string)
        .collect();
    if issues.len() > MAX_SHOWN_ISSUES {
        let more = issues.len() - MAX_SHOWN_ISSUES;
        lines.push(format!(
            "and {more} more problem{}",
            if more == 1 { "" } else { "s" }
        ));
    }
    lines
}

fn summary(issues: &[Issue]) -> String {
    match issues {
        [] => "invalid spec".to_string(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more problems)", rest.len()),
    }
}

/// A spec that passed validation, with the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub rollout: Rollout,
    pub warnings: Vec<Issue>,
    /// The name the file was given as (for messages).
    pub file: String,
}

/// Reads, parses and validates a spec file (`-`: standard input).
pub fn load(path: &Path) -> Result<Loaded, SpecError> {
    let bytes = read(path)?;
    parse_bytes(&crate::input::display_name(path), &bytes)
}

/// Reads a spec file (`-`: standard input): a regular file of at most [`MAX_SPEC_BYTES`],
/// read with bounded memory and time whatever the path names (see [`crate::input`]).
pub fn read(path: &Path) -> Result<Vec<u8>, SpecError> {
    use crate::input::InputError;
    crate::input::read_bounded(path, MAX_SPEC_BYTES).map_err(|e| match e {
        InputError::Io { path, source } => SpecError::Read { path, source },
        InputError::TooLarge { name, size, .. } => SpecError::TooLarge { path: name, size },
        other => SpecError::Input(other),
    })
}

/// Parses and validates spec bytes; `file` is used in messages.
pub fn parse_bytes(file: &str, bytes: &[u8]) -> Result<Loaded, SpecError> {
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(SpecError::TooLarge {
            path: file.to_string(),
            size: bytes.len() as u64,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| SpecError::NotText {
        path: file.to_string(),
        offset: e.valid_up_to(),
    })?;
    parse_str(file, text)
}

/// Parses and validates spec text; `file` is used in messages.
pub fn parse_str(file: &str, text: &str) -> Result<Loaded, SpecError> {
    if text.contains('\0') {
        return Err(SpecError::NotText {
            path: file.to_string(),
            offset: text.find('\0').unwrap_or(0),
        });
    }
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        return Err(SpecError::Empty {
            path: file.to_string(),
        });
    }
    let options = serde_saphyr::options! { budget: budget() };
    // The span tree costs a second parse, so it is built only when there is something to
    // locate: a parse error, or a spec that validation has issues (errors or warnings) with.
    let positions = || -> Result<Positions, SpecError> {
        // Syntax errors win: a typed parse may stop at a misplaced field before reaching them.
        Positions::parse(text, options.clone()).map_err(|syntax| {
            let mut issue = parse_issue(file, text, &Positions::default(), &syntax);
            // The parser knows no path for a syntax (often indentation) error; the keys above
            // the line name the field it stands in.
            if issue.field.is_empty()
                && let Some(pos) = issue.pos
            {
                issue.field = collect::enclosing_path(text, pos.line);
            }
            SpecError::Invalid {
                issues: vec![issue],
            }
        })
    };
    let rollout: Rollout = match serde_saphyr::from_str_with_options(text, options.clone()) {
        Ok(r) => r,
        Err(e) => {
            let p = positions()?;
            if let Some(issue) = collect::other_kind(file, text, &p) {
                return Err(SpecError::Invalid {
                    issues: vec![issue],
                });
            }
            let first = parse_issue(file, text, &p, &e);
            return Err(SpecError::Invalid {
                issues: collect::all_issues(file, text, &p, first),
            });
        }
    };
    let unlocated = Positions::default();
    // Only text with a raw unportable character, or an escape that makes one (`\x85`, `\u0085`,
    // `\U00000085`, `\N`), can hold one; most specs skip the walk.
    let scan_text = ["\\x", "\\u", "\\U", "\\N"]
        .iter()
        .any(|e| text.contains(e))
        || text.chars().any(unportable);
    let mut v = Validator {
        file,
        positions: &unlocated,
        scan_text,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    v.rollout(&rollout);
    if !v.errors.is_empty() || !v.warnings.is_empty() {
        // Validate again with positions: cheap next to a parse, and only on this path.
        let located = positions()?;
        v = Validator {
            file,
            positions: &located,
            scan_text,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        v.rollout(&rollout);
        if !v.errors.is_empty() {
            collect::sort(&mut v.errors);
            return Err(SpecError::Invalid { issues: v.errors });
        }
        let warnings = v.warnings;
        return Ok(Loaded {
            rollout,
            warnings,
            file: file.to_string(),
        });
    }
    Ok(Loaded {
        rollout,
        warnings: v.warnings,
        file: file.to_string(),
    })
}

/// The JSON Schema (draft 2020-12) of a rollout document, derived from the spec types so it
/// follows the parser: unknown fields are refused (`additionalProperties: false`), defaults and
/// doc comments become `default` and `description`. Checks the parser makes beyond the types
/// (names, quantities, cross-field rules) stay with `snaproll validate`.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(Rollout).to_value()
}

/// Parser limits: generous enough for a 16 MiB spec of tens of thousands of datasets (the
/// default node budget stops at 250,000), still bounded against alias bombs.
fn budget() -> Option<serde_saphyr::Budget> {
    serde_saphyr::budget! {
        max_nodes: 20_000_000,
        max_events: 40_000_000,
        max_total_scalar_bytes: MAX_SPEC_BYTES as usize * 4,
    }
}

/// Turns a serde-saphyr error into a one-line located issue with a field path and, for an
/// unknown field, a "did you mean" suggestion.
fn parse_issue(file: &str, text: &str, positions: &Positions, e: &serde_saphyr::Error) -> Issue {
    let pos = e.location().and_then(|l| {
        (l.line() > 0).then_some(Pos {
            line: l.line() as u32,
            column: l.column() as u32,
        })
    });
    let raw = bare_message(e);
    let mut field = pos
        .and_then(|p| positions.path_at(p))
        .unwrap_or("")
        .to_string();
    // Unknown and missing fields point at a key: name the mapping it stands in.
    let key_mapping = pos
        .and_then(|p| positions.mapping_of_key(p))
        .map(str::to_string);
    let message = if let Some((unknown, expected)) = parse_unknown_field(&raw) {
        if let Some(m) = key_mapping {
            field = m;
        }
        unknown_field_message(&unknown, &expected)
    } else if let Some(missing) = raw
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        if let Some(m) = key_mapping {
            field = m;
        }
        format!("missing required field `{missing}`")
    } else if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (value, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let options: Vec<String> = tail
            .split_once("expected one of ")
            .or_else(|| tail.split_once("expected "))
            .map(|(_, l)| {
                l.split(", ")
                    .map(|o| o.trim_matches('`').to_string())
                    .collect()
            })
            .unwrap_or_default();
        let suggestion = closest(value, &options)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        format!(
            "invalid value `{value}`{suggestion} (valid values: {})",
            options.join(", ")
        )
    } else if let Some(range) = raw.strip_prefix("invalid ").and_then(integer_range) {
        let range = field_range(&field).unwrap_or(range);
        number_message(pos.map(|p| scalar_at(text, p)).unwrap_or_default(), range)
    } else {
        user_message(&raw)
    };
    Issue {
        file: file.to_string(),
        pos,
        field,
        message,
    }
}

/// "unknown field `x`; did you mean `y`? (valid fields: …)".
fn unknown_field_message(unknown: &str, expected: &[String]) -> String {
    let suggestion = closest(unknown, expected)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    let valid = if expected.is_empty() {
        "this mapping takes no fields".to_string()
    } else {
        format!("valid fields: {}", expected.join(", "))
    };
    format!("unknown field `{unknown}`{suggestion} ({valid})")
}

/// The range of an integer type serde-saphyr names in "invalid u32" and the like.
fn integer_range(ty: &str) -> Option<(i128, i128)> {
    Some(match ty {
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" => (0, u64::MAX.into()),
        "i8" => (i8::MIN.into(), i8::MAX.into()),
        "i16" => (i16::MIN.into(), i16::MAX.into()),
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        "i64" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    })
}

/// The valid range of a numeric spec field where it is narrower than its Rust type's.
fn field_range(field: &str) -> Option<(i128, i128)> {
    let last = field.rsplit('.').next().unwrap_or(field);
    Some(match last {
        "replicas" => (0, i32::MAX.into()),
        "keep" => (1, u32::MAX.into()),
        "containerPort" | "port" | "targetPort" => (1, 65535),
        _ => return None,
    })
}

/// Says why a scalar is not a whole number of the field's type, quoting it.
fn number_message(scalar: &str, (min, max): (i128, i128)) -> String {
    // An empty value is located at the `:` after its key.
    if scalar.is_empty()
        || scalar.starts_with(':')
        || matches!(scalar, "~" | "null" | "Null" | "NULL")
    {
        return "must not be empty (expected a whole number)".to_string();
    }
    match scalar.parse::<i128>() {
        Ok(n) if n < min || n > max => {
            format!("`{scalar}` is out of range: expected a whole number from {min} to {max}")
        }
        _ => format!("expected a whole number, got `{scalar}`"),
    }
}

/// The plain scalar that starts at `pos`, as written (up to a flow delimiter, comment or line end).
fn scalar_at(text: &str, pos: Pos) -> &str {
    let Some(line) = text.lines().nth(pos.line.saturating_sub(1) as usize) else {
        return "";
    };
    let start = line
        .char_indices()
        .nth(pos.column.saturating_sub(1) as usize)
        .map_or(line.len(), |(i, _)| i);
    let rest = &line[start..];
    let end = rest.find([',', ']', '}', '#']).unwrap_or(rest.len());
    rest[..end].trim().trim_matches(|c| c == '"' || c == '\'')
}

/// Rewrites parser messages addressed to Rust developers into what a spec author needs.
fn user_message(raw: &str) -> String {
    if let Some(breach) = raw.strip_prefix("budget breached: ") {
        return budget_message(breach);
    }
    if raw.starts_with("alias replay")
        || raw.starts_with("alias expansion")
        || raw.starts_with("alias replay stack")
    {
        return "aliases (`*name`) expand to more than a spec can hold (over a million nodes); write the values out or use fewer aliases".to_string();
    }
    if let Some(key) = raw.strip_prefix("duplicate mapping key: ") {
        let key = key.split(", set DuplicateKeyPolicy").next().unwrap_or(key);
        return format!("duplicate key `{key}` (each key may appear once per mapping)");
    }
    if raw.starts_with("cannot deserialize null into string") {
        return "must not be empty or null (expected a string)".to_string();
    }
    if raw.starts_with("multiple YAML documents detected") {
        return format!("more than one YAML document; a spec is a single {KIND} document");
    }
    if let Some(what) = raw.strip_prefix("unexpected event: expected ") {
        let what = match what {
            "mapping start" => "a mapping (key: value pairs)",
            "sequence start" => "a list",
            "string scalar" => "a string",
            other => other,
        };
        return format!("expected {what}");
    }
    if raw.contains("tab") {
        return format!("{raw}; indent with spaces, not tabs");
    }
    raw.to_string()
}

/// Explains a parser limit (`Depth { depth: 65 }`, `Nodes { nodes: … }`, …) in a spec author's terms.
fn budget_message(breach: &str) -> String {
    let kind = breach.split([' ', '{']).next().unwrap_or(breach);
    let number: String = breach.chars().filter(char::is_ascii_digit).collect();
    let what = match kind {
        "Depth" => {
            return format!(
                "nested {number} levels deep; a spec is never more than 64 levels deep"
            );
        }
        "Nodes" => "values",
        "Events" => "parser events",
        "ScalarBytes" => "bytes of text in values",
        "Aliases" => "aliases (`*name`)",
        "Anchors" => "anchors (`&name`)",
        "Documents" => "YAML documents",
        "MergeKeys" => "merge keys (`<<`)",
        "CommentBytes" => "bytes of comments",
        _ => return format!("the spec exceeds a parser limit ({breach})"),
    };
    format!("too large: more than {number} {what}, over the parser's limit for a spec")
}

/// A YAML error as one plain sentence, without the parser's snippet, position or Rust advice;
/// also used for the text templates render.
pub(crate) fn yaml_problem(e: &serde_saphyr::Error) -> String {
    user_message(&bare_message(e))
}

/// The error text without serde-saphyr's source snippet or position suffix.
fn bare_message(e: &serde_saphyr::Error) -> String {
    let full = e.to_string();
    let first = full.lines().next().unwrap_or("").trim().to_string();
    // serde-saphyr appends " at line X, column Y" (several, for aliases) to some messages.
    let first = match first.find(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first,
    };
    let mut first = first.trim_start_matches("error: ").trim_end_matches('.');
    if first.starts_with("line ")
        && let Some((_, rest)) = first.split_once(": ")
    {
        first = rest;
    }
    let first = first.to_string();
    if first.is_empty() {
        "not a valid YAML document".to_string()
    } else {
        first
    }
}

/// Parses serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", or "there
/// are no fields").
fn parse_unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    let unknown = rest[..end].to_string();
    let tail = &rest[end + 1..];
    let list = tail
        .split_once("expected one of ")
        .or_else(|| tail.split_once("expected "))
        .map(|(_, l)| l)
        .unwrap_or("");
    let expected = list
        .split(", ")
        .map(|s| s.trim().trim_matches('`').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    Some((unknown, expected))
}

/// The known field closest to a misspelt one, when it is close enough to be a typo.
pub fn closest<'a>(unknown: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| {
            (
                strsim::jaro_winkler(&unknown.to_lowercase(), &k.to_lowercase()),
                k,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.as_str())
}

/// Collects errors and warnings with their positions.
struct Validator<'a> {
    file: &'a str,
    positions: &'a Positions,
    /// Whether strings may hold characters that are not portable (see [`unportable`]).
    scan_text: bool,
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Validator<'_> {
    fn issue(&self, field: &str, message: String) -> Issue {
        Issue {
            file: self.file.to_string(),
            pos: self.positions.find(field),
            field: field.to_string(),
            message,
        }
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        let issue = self.issue(field, message.into());
        self.errors.push(issue);
    }

    /// An error about a map entry: located by `lookup` (the entry's full path, whose key may
    /// be long or hold any character), named as `field` (its map).
    fn error_at(&mut self, lookup: &str, field: &str, message: String) {
        let mut issue = self.issue(lookup, message);
        issue.field = field.to_string();
        self.errors.push(issue);
    }

    fn warn(&mut self, field: &str, message: impl Into<String>) {
        let issue = self.issue(field, message.into());
        self.warnings.push(issue);
    }

    fn rollout(&mut self, r: &Rollout) {
        if r.api_version != API_VERSION {
            self.error(
                "apiVersion",
                format!(
                    "unsupported apiVersion `{}`; this snaproll reads `{API_VERSION}`",
                    r.api_version
                ),
            );
        }
        if r.kind != KIND {
            self.error(
                "kind",
                format!("unsupported kind `{}`; expected `{KIND}`", r.kind),
            );
        }
        if self.scan_text
            && let Ok(doc) = serde_json::to_value(r)
        {
            self.portable_strings(String::new(), &doc);
        }
        self.dns_label("metadata.name", &r.metadata.name);
        self.dns_label("metadata.namespace", &r.metadata.namespace);
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
                "spec.datasets",
                "at least one dataset is required (the list is empty)",
            );
        }
        let mut dataset_names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut consumer_names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, d) in r.spec.datasets.iter().enumerate() {
            let at = format!("spec.datasets[{i}]");
            if let Some(first) = dataset_names.insert(&d.name, i) {
                dataset_names.insert(&d.name, first);
                self.error(
                    &format!("{at}.name"),
                    format!(
                        "duplicate dataset name `{}` (already used by spec.datasets[{first}]); dataset names must be unique",
                        d.name
                    ),
                );
            }
            if let Some(first) = consumer_names.insert(&d.consumer.name, i) {
                consumer_names.insert(&d.consumer.name, first);
                self.error(
                    &format!("{at}.consumer.name"),
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
        self.dns_subdomain("spec.snapshotClass.name", &c.name);
        match (&c.driver, c.existing) {
            (None, false) => self.error(
                "spec.snapshotClass.driver",
                "missing required field `driver` (the CSI driver, e.g. pd.csi.storage.gke.io or ebs.csi.aws.com), or set `existing: true` to use a class that already exists",
            ),
            (Some(d), _) => self.dns_subdomain("spec.snapshotClass.driver", d),
            (None, true) => {}
        }
        for key in c.parameters.keys() {
            if key.is_empty() {
                self.error(
                    "spec.snapshotClass.parameters",
                    "parameter names must not be empty",
                );
            }
        }
        if c.deletion_policy == DeletionPolicy::Retain {
            self.warn(
                "spec.snapshotClass.deletionPolicy",
                "with Retain, retired snapshots stay in the storage backend (and on the bill) until deleted by hand",
            );
        }
    }

    fn dataset(&mut self, at: &str, d: &Dataset, class: &SnapshotClassSpec) {
        self.dns_label(&format!("{at}.name"), &d.name);
        self.storage(&format!("{at}.storage"), &d.storage);
        self.producer(&format!("{at}.producer"), &d.producer);
        if let Some(pin) = &d.generations.pin {
            self.dns_label(&format!("{at}.generations.pin"), pin);
        }
        if d.generations.keep == 0 {
            self.error(
                &format!("{at}.generations.keep"),
                "must be at least 1 (the serving generation is always kept)",
            );
        }
        self.consumer(&format!("{at}.consumer"), d, class);
    }

    fn storage(&mut self, at: &str, s: &Storage) {
        if let Some(sc) = &s.storage_class_name {
            self.dns_subdomain(&format!("{at}.storageClassName"), sc);
        }
        match quantity::parse(&s.size) {
            Ok(q) if q.is_positive() && s.size.bytes().all(|b| b.is_ascii_digit()) => {
                // A bare number is bytes: `size: 200` asks for a 200-byte volume, which the
                // provisioner rounds up to its minimum; nobody means that for a dataset.
                self.warn(
                    &format!("{at}.size"),
                    format!(
                        "`{0}` has no unit, so it means {0} bytes; did you mean {0}Gi?",
                        s.size
                    ),
                );
            }
            Ok(q) if q.is_positive() => {}
            Ok(_) => self.error(
                &format!("{at}.size"),
                format!("must be greater than zero (got `{}`)", s.size),
            ),
            Err(e) => self.error(&format!("{at}.size"), e.to_string()),
        }
        if s.access_modes.is_empty() {
            self.error(
                &format!("{at}.accessModes"),
                "at least one access mode is required (ReadWriteOnce, ReadOnlyMany, ReadWriteMany, ReadWriteOncePod)",
            );
        }
        let unique: BTreeSet<_> = s.access_modes.iter().collect();
        if unique.len() != s.access_modes.len() {
            self.error(&format!("{at}.accessModes"), "access modes must not repeat");
        }
    }

    fn producer(&mut self, at: &str, p: &Producer) {
        self.image(&format!("{at}.image"), &p.image);
        self.env(&format!("{at}.env"), &p.env);
        self.resources(&format!("{at}.resources"), &p.resources);
        self.mount_path(&format!("{at}.mountPath"), &p.mount_path);
        if let Some(sa) = &p.service_account_name {
            self.dns_subdomain(&format!("{at}.serviceAccountName"), sa);
        }
        if p.active_deadline_seconds < 1 {
            self.error(
                &format!("{at}.activeDeadlineSeconds"),
                format!(
                    "must be at least 1 second (got {}); the default is {} (12h)",
                    p.active_deadline_seconds, DEFAULT_ACTIVE_DEADLINE_SECONDS
                ),
            );
        }
        if p.max_restarts < 0 {
            self.error(
                &format!("{at}.maxRestarts"),
                format!(
                    "must be 0 or more (got {}); the default is {DEFAULT_MAX_RESTARTS}",
                    p.max_restarts
                ),
            );
        }
        let selector_at = format!("{at}.nodeSelector");
        for (key, value) in &p.node_selector {
            let path = format!("{selector_at}.{key}");
            if let Err(why) = check_qualified_name(key) {
                self.error_at(&path, &selector_at, format!("key {why}"));
            } else if let Err(why) = check_label_value(value) {
                self.error_at(&path, &path, format!("value of `{key}`: {why}"));
            }
        }
        for (i, t) in p.tolerations.iter().enumerate() {
            let f = format!("{at}.tolerations[{i}]");
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

    fn consumer(&mut self, at: &str, d: &Dataset, class: &SnapshotClassSpec) {
        let c = &d.consumer;
        let name_at = format!("{at}.name");
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
        if c.replicas < 0 {
            self.error(
                &format!("{at}.replicas"),
                format!("must be 0 or more (got {})", c.replicas),
            );
        } else if c.replicas > i64::from(i32::MAX) {
            self.error(
                &format!("{at}.replicas"),
                format!("must be at most {} (got {})", i32::MAX, c.replicas),
            );
        }
        self.image(&format!("{at}.image"), &c.image);
        self.env(&format!("{at}.env"), &c.env);
        self.resources(&format!("{at}.resources"), &c.resources);
        self.mount_path(&format!("{at}.mountPath"), &c.mount_path);
        if let Some(claim) = &c.claim_name {
            self.dns_label(&format!("{at}.claimName"), claim);
        }
        let mut port_names = BTreeSet::new();
        for (i, p) in c.ports.iter().enumerate() {
            let f = format!("{at}.ports[{i}]");
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
            let f = format!("{at}.service.ports[{i}]");
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
                &format!("{at}.service.ports"),
                "a ClusterIP service needs at least one port (or use type Headless)",
            );
        }
        let images = class
            .parameters
            .get("snapshot-type")
            .is_some_and(|t| t == "images");
        if class.driver.as_deref() == Some(GKE_PD_DRIVER)
            && c.replicas > i64::from(GKE_RESTORES_PER_HOUR)
            && !images
        {
            self.warn(
                &format!("{at}.replicas"),
                format!(
                    "{} replicas restore from one GKE PD snapshot, which allows about {GKE_RESTORES_PER_HOUR} restores per hour; set `snapshot-type: images` in spec.snapshotClass.parameters",
                    c.replicas
                ),
            );
        }
        if c.replicas > 1
            && !c.read_only
            && d.storage
                .access_modes
                .iter()
                .all(|m| *m == AccessMode::ReadWriteOncePod)
        {
            self.warn(
                &format!("{at}.readOnly"),
                "every replica gets its own copy of the snapshot; ReadWriteOncePod only limits each copy to one pod",
            );
        }
    }

    fn image(&mut self, field: &str, image: &str) {
        if image.trim().is_empty() {
            self.error(field, "must name a container image (it is empty)");
        } else if image.chars().any(char::is_whitespace) {
            self.error(
                field,
                format!("container image `{image}` must not contain white space"),
            );
        }
    }

    fn env(&mut self, at: &str, env: &[EnvVar]) {
        let mut seen = BTreeSet::new();
        for (i, e) in env.iter().enumerate() {
            let f = format!("{at}[{i}].name");
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

    fn resources(&mut self, at: &str, r: &Resources) {
        for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (name, value) in map {
                let f = format!("{at}.{kind}.{name}");
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
                    &format!("{at}.requests.{name}"),
                    format!("request {request} is above the limit {limit}"),
                );
            }
        }
    }

    fn mount_path(&mut self, field: &str, path: &str) {
        if !path.starts_with('/') {
            self.error(field, format!("must be an absolute path (got `{path}`)"));
        } else if path.split('/').any(|c| c == "..") {
            self.error(field, format!("must not contain `..` (got `{path}`)"));
        }
    }

    fn port_number(&mut self, field: &str, n: i64) {
        if !(1..=65535).contains(&n) {
            self.error(
                field,
                format!("must be a port number from 1 to 65535 (got {n})"),
            );
        }
    }

    fn port_name(&mut self, field: &str, name: &str) {
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

    fn dns_label(&mut self, field: &str, name: &str) {
        if let Err(why) = check_dns_label(name) {
            self.error(field, why);
        }
    }

    fn dns_subdomain(&mut self, field: &str, name: &str) {
        if let Err(why) = check_dns_subdomain(name) {
            self.error(field, why);
        }
    }
}

/// Checks an RFC 1123 label (what Kubernetes requires of namespaces, Service names and label-like
/// names): at most 63 lower-case alphanumerics or `-`, starting and ending alphanumeric.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty (an RFC 1123 name such as `data`)".to_string());
    }
    if name.len() > 63 {
        return Err(format!(
            "`{name}` is {} characters; an RFC 1123 label has at most 63",
            name.len()
        ));
    }
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if !valid_chars || !ends_ok {
        return Err(format!(
            "invalid name `{name}`: use lower-case letters, digits and `-`, starting and ending with a letter or digit (RFC 1123)"
        ));
    }
    Ok(())
}

/// Characters a spec string may not hold: DEL, the C1 controls (U+0080..U+009F) and the
/// non-characters U+FFFE and U+FFFF. The YAML snaproll writes escapes them, but go-yaml's
/// emitter writes them back raw and its reader then refuses them, so `kubectl kustomize`
/// (and so Argo CD and Flux) fails on the whole folder; NEL (U+0085) it passes on raw, and
/// YAML 1.1 readers turn it into a line break. Refused in validation, with the field.
pub fn unportable(c: char) -> bool {
    matches!(c, '\u{7f}'..='\u{9f}' | '\u{fffe}' | '\u{ffff}')
}

/// A value for a message: control and other invisible characters escaped, long values cut.
fn shown(value: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = value
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// The name part of a qualified name, and a label value: at most 63 letters, digits, `-`, `_`
/// and `.`, starting and ending with a letter or digit (Kubernetes' `qualifiedNameFmt`).
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Checks a label, annotation, node-selector or toleration key as the API server does
/// (`IsQualifiedName`): an optional DNS subdomain prefix (at most 253 characters) and `/`,
/// then a name of at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a
/// letter or digit.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && check_dns_subdomain(p).is_err()
    {
        return Err(format!(
            "`{}`: the prefix before `/` must be a DNS subdomain of at most 253 characters (lower-case letters, digits, `-` and `.`), e.g. `kubernetes.io/os`",
            shown(key)
        ));
    }
    if !is_label_name(name) {
        return Err(format!(
            "`{}` is not a qualified name: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit, after an optional DNS subdomain prefix and `/` (e.g. `kubernetes.io/os`)",
            shown(key)
        ));
    }
    Ok(())
}

/// Checks a label value as the API server does (`IsValidLabelValue`): empty, or at most 63
/// letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a valid label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit (or empty)",
        shown(value)
    ))
}

/// Checks an RFC 1123 subdomain as Kubernetes does (`IsDNS1123Subdomain`): dot-separated parts of
/// lower-case alphanumerics and `-`, each starting and ending alphanumeric, at most 253 characters
/// in all. Unlike DNS, Kubernetes puts no 63-character limit on the parts.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        let head: String = name.chars().take(20).collect();
        return Err(format!(
            "`{head}…` is {} characters; an RFC 1123 subdomain has at most 253",
            name.len()
        ));
    }
    let part_ok = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && p.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    if name.is_empty() || !name.split('.').all(part_ok) {
        return Err(format!(
            "invalid name `{name}`: use lower-case letters, digits, `-` and `.`, each part starting and ending with a letter or digit (RFC 1123 subdomain)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(check_dns_label("data-1").is_ok());
        assert!(check_dns_label("Data").is_err());
        assert!(check_dns_label("-a").is_err());
        assert!(check_dns_label("../x").is_err());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn qualified_names_and_label_values_follow_the_api_server() {
        for ok in [
            "a",
            "kubernetes.io/os",
            "node.kubernetes.io/instance-type",
            "A_b.c-9",
            &"a".repeat(63),
            &format!("{}/x", "a".repeat(253)),
        ] {
            assert!(check_qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a\"b",
            "{{ 7*7 }}",
            "-a",
            "a-",
            "/a",
            "a/",
            "a/b/c",
            "Example.com/a",
            "a b",
            "a\u{85}",
            &"a".repeat(64),
            &format!("{}/x", "a".repeat(254)),
            &"k".repeat(100_000),
        ] {
            assert!(check_qualified_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("n1-standard_4.x").is_ok());
        for bad in ["a b", "-a", "a/b", "\u{2028}", &"v".repeat(64)] {
            assert!(check_label_value(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_qualified_name(&"k".repeat(100_000)).unwrap_err(),
            format!(
                "`{}…` is not a qualified name: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit, after an optional DNS subdomain prefix and `/` (e.g. `kubernetes.io/os`)",
                "k".repeat(40)
            )
        );
    }

    #[test]
    fn dns_subdomains_have_no_per_part_limit() {
        assert!(check_dns_subdomain("pd.csi.storage.gke.io").is_ok());
        assert!(check_dns_subdomain(&"a".repeat(70)).is_ok());
        assert!(check_dns_subdomain(&"a".repeat(254)).is_err());
        assert!(check_dns_subdomain("a..b").is_err());
        assert!(check_dns_subdomain("a.-b").is_err());
        assert!(check_dns_subdomain("").is_err());
    }

    #[test]
    fn over_long_names_with_multibyte_characters_do_not_panic() {
        let name = format!("a{}", "é".repeat(200));
        let err = check_dns_subdomain(&name).unwrap_err();
        assert!(
            err.starts_with("`aééééééééééééééééééé…` is 401 characters"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_messages_parse() {
        let (u, e) =
            parse_unknown_field("unknown field `replcas`, expected one of `name`, `replicas`")
                .unwrap();
        assert_eq!(u, "replcas");
        assert_eq!(e, vec!["name", "replicas"]);
        assert_eq!(closest("replcas", &e), Some("replicas"));
        assert_eq!(closest("zzz", &e), None);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        /// 2,000 cases per property unless PROPTEST_CASES says otherwise.
        fn config() -> ProptestConfig {
            let cases = std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2_000);
            ProptestConfig {
                cases,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        const EXAMPLE: &str = include_str!("../../examples/gke-daily/snaproll.yaml");

        const SPECIAL: &[char] = &[
            '\u{0}', '\t', '\n', '\r', '\u{7f}', '\u{85}', '\u{9f}', '\u{2028}', '\u{feff}',
            '\u{fffe}', '"', '\'', '\\', ':', '#', '-', '?', '&', '*', '!', '|', '>', '{', '}',
            '[', ']', ',', ' ', '<', '~', '0', 'a',
        ];

        fn text() -> impl Strategy<Value = String> {
            let c = prop_oneof![
                3 => proptest::sample::select(SPECIAL),
                1 => any::<char>(),
            ];
            proptest::collection::vec(c, 0..32).prop_map(String::from_iter)
        }

        /// The example spec with the free-text fields set to `v`, written as YAML.
        fn spec_with(v: &str) -> String {
            let mut doc: Value = crate::yaml::from_str(EXAMPLE).unwrap();
            doc["spec"]["snapshotClass"]["parameters"] = json!({ v: v, "p": v });
            let d = &mut doc["spec"]["datasets"][0];
            d["producer"]["command"] = json!([v]);
            d["producer"]["args"] = json!([v, v]);
            d["producer"]["env"] = json!([{"name": "V", "value": v}]);
            d["consumer"]["args"] = json!([v]);
            d["consumer"]["env"] = json!([{"name": "V", "value": v}]);
            crate::yaml::to_string(&doc)
        }

        proptest! {
            #![proptest_config(config())]

            /// Arbitrary text never panics the loader.
            #[test]
            fn loader_never_panics_on_arbitrary_text(s in text()) {
                let _ = parse_str("fuzz.yaml", &s);
                let _ = parse_bytes("fuzz.yaml", s.as_bytes());
            }

            /// The example with any span replaced by arbitrary text never panics the loader.
            #[test]
            fn loader_never_panics_on_a_mangled_spec(at in 0..EXAMPLE.len(), len in 0usize..40, s in text()) {
                let start = (0..=at).rev().find(|&i| EXAMPLE.is_char_boundary(i)).unwrap_or(0);
                let end = (start + len).min(EXAMPLE.len());
                let end = (end..=EXAMPLE.len()).find(|&i| EXAMPLE.is_char_boundary(i)).unwrap();
                let text = format!("{}{s}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
                let _ = parse_str("fuzz.yaml", &text);
            }

            /// Any string in the spec's free-text fields is accepted and reaches the rendered
            /// objects exactly as written.
            #[test]
            fn free_text_reaches_rendered_objects_exactly(v in text()) {
                let loaded = parse_str("fuzz.yaml", &spec_with(&v))
                    .map_err(|e| e.to_string());
                let loaded = match loaded {
                    Ok(l) => l,
                    Err(e) => {
                        // Only an empty parameter key, or a character go-yaml cannot carry.
                        prop_assert!(v.is_empty() || v.chars().any(unportable), "{}", e);
                        return Ok(());
                    }
                };
                prop_assert!(!v.chars().any(unportable), "{:?} was accepted", v);
                let set = crate::render::Renderer::new(None)
                    .unwrap()
                    .render(&loaded.rollout, &crate::render::Plan::single(&loaded.rollout, "2021-07-15"))
                    .unwrap();
                for o in &set.objects {
                    let back = crate::yaml::from_str(&o.yaml).unwrap();
                    prop_assert_eq!(&back, &o.value);
                    prop_assert_eq!(&serde_saphyr::from_str::<Value>(&o.yaml).unwrap(), &o.value);
                    if o.id.kind == crate::manifest::Kind::Pod {
                        let c = &back["spec"]["containers"][0];
                        prop_assert_eq!(&c["args"], &json!([v, v]));
                        prop_assert_eq!(&c["command"], &json!([v]));
                        prop_assert_eq!(&c["env"][0]["value"], &json!(v));
                    }
                }
            }
        }
    }
}
