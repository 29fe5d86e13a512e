//! The spec's types: the document as the parser reads it and `snaproll schema` describes it.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize};

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
    /// How the generation's snapshot is waited for.
    #[serde(default)]
    pub snapshot: SnapshotPolicy,
    pub consumer: Consumer,
}

/// The snapshot wait when the spec sets none: enough for most volumes on GKE and EBS.
pub const DEFAULT_SNAPSHOT_TIMEOUT: &str = "6h";

/// `snapshot`: per dataset, because a 200Gi EBS volume takes hours where a small one takes
/// minutes, and every runner (`status`, `reconcile`, the CronJob) must judge it the same way.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SnapshotPolicy {
    /// How long a generation's snapshot may take to become readyToUse before the generation
    /// counts as failed (the previous one keeps serving): a duration such as `12h`, `90m` or
    /// `PT12H`. Raise it for large volumes on EBS, where snapshots take hours.
    /// `--snapshot-timeout` overrides it for one run.
    #[serde(default = "default_snapshot_timeout")]
    pub timeout: String,
    /// How many identical VolumeSnapshots each generation takes (1 to 16): replica `r`
    /// restores from copy `r % copies`, so a backend that limits restores per snapshot (GKE
    /// standard PD: about 6 per hour) serves `copies` times as many replicas an hour. A change
    /// reaches the next generation.
    #[serde(default = "default_copies")]
    #[schemars(range(min = 1, max = 16))]
    pub copies: u32,
}

/// Most snapshot copies a generation may take.
pub const MAX_SNAPSHOT_COPIES: u32 = 16;

fn default_copies() -> u32 {
    1
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            timeout: default_snapshot_timeout(),
            copies: default_copies(),
        }
    }
}

fn default_snapshot_timeout() -> String {
    DEFAULT_SNAPSHOT_TIMEOUT.to_string()
}

/// Parses a duration as `snapshot.timeout` and `--snapshot-timeout` take it (`12h`, `90m`,
/// `1h30m`, `PT12H`): positive, or why not.
pub fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<jiff::SignedDuration>() {
        Ok(d) if d.is_positive() => Ok(d.unsigned_abs()),
        Ok(_) => Err(format!("`{s}` must be longer than zero")),
        Err(_) => Err(format!(
            "`{s}` is not a duration; use one such as 12h, 90m or 1h30m"
        )),
    }
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
    /// A check each new generation's data must pass before its StatefulSet is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
}

/// Suffix of a generation's verify Job and claim: `<dataset>-<generation>-verify`.
pub const VERIFY_SUFFIX: &str = "-verify";
/// Longest Job name: the Job controller puts it in a label value on the Job's Pods.
pub const MAX_JOB_NAME: usize = 63;

/// The verify timeout when the spec sets none.
pub const DEFAULT_VERIFY_TIMEOUT: &str = "30m";

/// `consumer.verify`: a Job (`<dataset>-<generation>-verify`) run once per generation, after
/// its snapshot is ready and before its StatefulSet exists, on a claim restored from the new
/// snapshot and mounted read-only at `consumer.mountPath` (a checksum, a smoke load). It must
/// complete; a failure or a timeout fails the generation with the Job's message and the
/// previous generation keeps serving.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Verify {
    pub image: String,
    /// The container's command (at least one element).
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// How long the Job may run before the generation fails (the Job's
    /// `activeDeadlineSeconds`): a duration such as `30m`, `2h` or `PT45M`.
    #[serde(default = "default_verify_timeout")]
    pub timeout: String,
}

fn default_verify_timeout() -> String {
    DEFAULT_VERIFY_TIMEOUT.to_string()
}

impl Verify {
    /// How long the verify Job may run (`timeout`, checked by validation).
    pub fn timeout(&self) -> std::time::Duration {
        parse_timeout(&self.timeout)
            .or_else(|_| parse_timeout(DEFAULT_VERIFY_TIMEOUT))
            .unwrap_or_default()
    }
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
    /// How long this dataset's snapshot may take (`snapshot.timeout`, checked by validation).
    pub fn snapshot_timeout(&self) -> std::time::Duration {
        parse_timeout(&self.snapshot.timeout)
            .or_else(|_| parse_timeout(DEFAULT_SNAPSHOT_TIMEOUT))
            .unwrap_or_default()
    }

    /// Name of the consumer's volumeClaimTemplate.
    pub fn claim_name(&self) -> &str {
        self.consumer.claim_name.as_deref().unwrap_or(&self.name)
    }
}
