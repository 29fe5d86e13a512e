//! Errors of the cluster layer, and the classification of API failures (transient, conflict,
//! immutable field) that decides between retrying, reporting and stopping.

use std::fmt;

/// Why a cluster operation failed. Every variant names the object (or kind) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot configure cluster access: {message}")]
    Config { message: String },
    /// Reading the live objects of one kind failed.
    #[error("listing {kind} objects in {scope}")]
    List {
        kind: String,
        scope: String,
        #[source]
        source: ApiCause,
    },
    /// The API server does not serve a kind snaproll renders (a missing CRD).
    #[error(
        "the cluster does not serve {kind} ({api_version}); install the external-snapshotter CRDs and controller for VolumeSnapshot kinds"
    )]
    NotServed {
        kind: String,
        api_version: String,
        #[source]
        source: ApiCause,
    },
    /// Reading or writing the ApplySet parent (the inventory) failed.
    #[error("{object} (ApplySet parent)")]
    Parent {
        object: String,
        #[source]
        source: ApiCause,
    },
    /// The ApplySet parent exists but belongs to something else.
    #[error(
        "{object} exists but is not the ApplySet parent of this rollout ({reason}); rename it or the rollout"
    )]
    ForeignParent { object: String, reason: String },
    /// An object snaproll would write exists and is not a member of the rollout's ApplySet:
    /// snaproll never adopts or overwrites it (ownership is membership, not labels).
    #[error(
        "{object} exists and is not snaproll's ({reason}); snaproll never adopts or overwrites it: delete or rename it, or rename the dataset or consumer in the spec; nothing was written"
    )]
    Foreign { object: String, reason: String },
    /// Another field manager owns fields snaproll wants to set.
    #[error(
        "{object}: conflict with field manager{} {} over {}; rerun with --force-conflicts to take ownership",
        if managers.len() == 1 { "" } else { "s" },
        quoted(managers),
        if fields.is_empty() { "fields snaproll sets".to_string() } else { fields.join(", ") }
    )]
    Conflict {
        object: String,
        managers: Vec<String>,
        fields: Vec<String>,
        #[source]
        source: ApiCause,
    },
    /// The change touches a field the API server forbids changing on a live object.
    #[error(
        "{object}: cannot change immutable field{} {}; roll a new generation (--generation) instead, snaproll never deletes and recreates a live object",
        if fields.len() == 1 { "" } else { "s" },
        fields.join(", ")
    )]
    Immutable {
        object: String,
        fields: Vec<String>,
        #[source]
        source: ApiCause,
    },
    /// The server-side dry-run rejected the object; nothing was written.
    #[error("{object}: rejected by server-side dry-run, nothing was written")]
    DryRun {
        object: String,
        #[source]
        source: ApiCause,
    },
    /// The server-side apply of an object failed.
    #[error("applying {object}")]
    Apply {
        object: String,
        #[source]
        source: ApiCause,
    },
    /// Deleting an object failed; it stays in the inventory for the next run.
    #[error("deleting {object} (kept in the inventory for the next run)")]
    Delete {
        object: String,
        #[source]
        source: ApiCause,
    },
    /// Another run holds the rollout's Lease (it has not released it and it has not expired):
    /// this run must not write the rollout. Checked before anything is written.
    #[error(
        "rollout {rollout} is being changed by another run: Lease {lease} held by {holder} (renewed {renewed}, expires in {expires_in}s); this run did nothing"
    )]
    Locked {
        rollout: String,
        /// `namespace/name` of the Lease.
        lease: String,
        /// The other run's `holderIdentity`.
        holder: String,
        /// Its last `renewTime` (RFC 3339), or `never`.
        renewed: String,
        /// Seconds until it expires and another run may take it over.
        expires_in: u64,
    },
    /// This run no longer holds its Lease (a renewal failed or another run took it over after
    /// it expired): the run must stop writing at once, another one may be writing.
    #[error(
        "this run lost Lease {lease} (held as {holder}): {reason}; it stopped writing the rollout"
    )]
    LeaseLost {
        lease: String,
        holder: String,
        reason: String,
    },
    /// Reading, taking, renewing or releasing the rollout's Lease failed at the API.
    #[error("{action} Lease {lease}")]
    Lease {
        /// `taking`, `renewing` or `releasing`.
        action: &'static str,
        lease: String,
        #[source]
        source: ApiCause,
    },
}

impl ApplyError {
    /// The object or kind the error is about.
    pub fn object(&self) -> Option<&str> {
        match self {
            ApplyError::Parent { object, .. }
            | ApplyError::ForeignParent { object, .. }
            | ApplyError::Foreign { object, .. }
            | ApplyError::Conflict { object, .. }
            | ApplyError::Immutable { object, .. }
            | ApplyError::DryRun { object, .. }
            | ApplyError::Apply { object, .. }
            | ApplyError::Delete { object, .. } => Some(object),
            ApplyError::List { kind, .. } | ApplyError::NotServed { kind, .. } => Some(kind),
            ApplyError::Locked { lease, .. }
            | ApplyError::LeaseLost { lease, .. }
            | ApplyError::Lease { lease, .. } => Some(lease),
            ApplyError::Config { .. } => None,
        }
    }
}

fn quoted(names: &[String]) -> String {
    if names.is_empty() {
        return "(unknown)".to_string();
    }
    names
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One failed API request, summarised on one line. kube's own error prints a debug dump of
/// the whole Status, which users must never see, so this keeps the parts that matter and the
/// original error behind [`ApiCause::kube`].
#[derive(Debug)]
pub struct ApiCause {
    /// HTTP status code, when the server answered.
    pub code: Option<u16>,
    /// The API's machine-readable reason (`Conflict`, `Invalid`, ...), when it answered.
    pub reason: String,
    /// The API's message, or the transport error.
    pub message: String,
    /// `details.causes[].field` of the Status, when given.
    pub fields: Vec<String>,
    /// The request ran out of time (our own per-request timeout).
    pub timed_out: bool,
    /// How many attempts were made (more than one after transient failures).
    pub attempts: u32,
    /// How long the server asked the client to wait before retrying: the Status body's
    /// `details.retryAfterSeconds` (what kube exposes of the `Retry-After` header the API
    /// server sends with it).
    pub retry_after: Option<std::time::Duration>,
    kube: Option<kube::Error>,
}

impl ApiCause {
    /// Summarises a kube error.
    pub fn from_kube(err: kube::Error) -> Self {
        match &err {
            kube::Error::Api(status) => ApiCause {
                code: Some(status.code),
                reason: if status.reason == KUBE_UNPARSED_REASON {
                    // Not a Status body (an apiserver filter's plain-text 429, a proxy's 503):
                    // kube's placeholder says nothing, the HTTP reason phrase does.
                    reason_phrase(status.code).to_string()
                } else {
                    status.reason.clone()
                },
                message: one_line(without_object_dump(&status.message)),
                retry_after: status
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|s| *s > 0)
                    .map(|s| std::time::Duration::from_secs(u64::from(s))),
                fields: status
                    .details
                    .as_ref()
                    .map(|d| {
                        d.causes
                            .iter()
                            .filter(|c| !c.field.is_empty())
                            .map(|c| c.field.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                timed_out: false,
                attempts: 1,
                kube: Some(err),
            },
            other => {
                let mut message = one_line(&other.to_string());
                let mut src = std::error::Error::source(other);
                while let Some(s) = src {
                    let t = one_line(&s.to_string());
                    if !message.contains(&t) {
                        message = format!("{message}: {t}");
                    }
                    src = s.source();
                }
                ApiCause {
                    code: None,
                    reason: String::new(),
                    message,
                    fields: Vec::new(),
                    timed_out: false,
                    attempts: 1,
                    retry_after: None,
                    kube: Some(err),
                }
            }
        }
    }

    /// A request that did not answer within the per-request timeout.
    pub fn timeout(after: std::time::Duration) -> Self {
        ApiCause {
            code: None,
            reason: "Timeout".to_string(),
            message: format!("no answer within {:.1}s", after.as_secs_f64()),
            fields: Vec::new(),
            timed_out: true,
            attempts: 1,
            retry_after: None,
            kube: None,
        }
    }

    /// The original kube error, if there was one.
    pub fn kube(&self) -> Option<&kube::Error> {
        self.kube.as_ref()
    }

    /// Whether retrying may help: throttling (429), server errors (5xx), our own request
    /// timeout, and transport failures (a refused, reset or broken connection). Everything
    /// else is final, including errors without an HTTP answer that a retry cannot fix: an
    /// undecodable answer, an auth exec plugin that failed, TLS or configuration problems.
    pub fn is_transient(&self) -> bool {
        match self.code {
            Some(429) => true,
            Some(c) => c >= 500,
            None if self.timed_out => true,
            None => self.kube.as_ref().is_some_and(transport_failure),
        }
    }

    /// A 404.
    pub fn is_not_found(&self) -> bool {
        self.code == Some(404)
    }

    /// A server-side apply conflict with another field manager (409 with reason Conflict and
    /// the "conflict with" wording; a 409 AlreadyExists is something else).
    pub fn is_apply_conflict(&self) -> bool {
        self.code == Some(409) && self.message.contains("conflict with")
    }

    /// Field managers named in an apply-conflict message (`conflict with "kubectl" using v1`).
    pub fn conflicting_managers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut rest = self.message.as_str();
        while let Some(i) = rest.find("conflict with \"") {
            rest = &rest[i + "conflict with \"".len()..];
            if let Some(end) = rest.find('"') {
                let m = rest[..end].to_string();
                if !out.contains(&m) {
                    out.push(m);
                }
                rest = &rest[end..];
            } else {
                break;
            }
        }
        out
    }

    /// Whether this is the API server refusing a change to an immutable field: a 422 whose
    /// message says so (StatefulSet's "updates to statefulset spec for fields other than",
    /// "field is immutable", CEL rules such as VolumeSnapshot's "source is immutable").
    pub fn is_immutable(&self) -> bool {
        self.code == Some(422)
            && (self
                .message
                .contains("updates to statefulset spec for fields other than")
                || self.message.contains("may not change fields other than")
                || self.message.contains("immutable"))
    }
}

impl fmt::Display for ApiCause {
    /// `[after N attempts: ]CODE Reason: message`: the last answer, so a request that gave up
    /// says what the server said last (e.g. `after 5 attempts: 429 TooManyRequests: ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempts > 1 {
            write!(f, "after {} attempts: ", self.attempts)?;
        }
        match self.code {
            Some(code) if !self.reason.is_empty() => {
                write!(f, "{code} {}: {}", self.reason, self.message)?
            }
            Some(code) => write!(f, "{code}: {}", self.message)?,
            None => write!(f, "{}", self.message)?,
        }
        Ok(())
    }
}

impl std::error::Error for ApiCause {}

/// Whether a kube error without an HTTP answer is the connection failing: hyper's own errors
/// (closed, reset, timed out), a reading error, or an I/O error under the service stack
/// (connection refused, DNS). An I/O error under an auth error is the exec plugin failing to
/// start, which a retry does not fix.
fn transport_failure(err: &kube::Error) -> bool {
    match err {
        kube::Error::HyperError(_) | kube::Error::ReadEvents(_) => true,
        kube::Error::Service(e) => {
            let mut io = false;
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
            while let Some(s) = src {
                if s.is::<kube::client::AuthError>() || s.is::<kube::Error>() {
                    return s
                        .downcast_ref::<kube::Error>()
                        .is_some_and(transport_failure);
                }
                io |= s.is::<std::io::Error>();
                src = s.source();
            }
            io
        }
        _ => false,
    }
}

/// The API server's message without the dump of the old and new object it appends to some
/// immutable-field errors (PVC and Pod spec: a unified diff of Go structs on the following lines),
/// which would flood the one-line error.
fn without_object_dump(s: &str) -> &str {
    let mut end = 0;
    for (i, line) in s.split_inclusive('\n').enumerate() {
        let t = line.trim();
        let go_struct = t.ends_with('{')
            && t.trim_start_matches('&')
                .split('{')
                .next()
                .is_some_and(|ty| ty.contains('.') && !ty.contains(' '));
        if i > 0 && (t.starts_with("@@") || go_struct) {
            break;
        }
        end += line.len();
    }
    &s[..end]
}

/// The reason kube gives an error answer whose body is not a Status.
const KUBE_UNPARSED_REASON: &str = "Failed to parse error data";

/// The HTTP reason phrase of the status codes an API server or a proxy in front of it answers
/// without a Status body.
fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> ApiCause {
        ApiCause::from_kube(kube::Error::Api(Box::new(
            kube::core::Status::failure(message, reason).with_code(code),
        )))
    }

    #[test]
    fn transient_errors_are_throttling_server_errors_and_timeouts() {
        assert!(status(429, "TooManyRequests", "slow down").is_transient());
        assert!(status(500, "InternalError", "boom").is_transient());
        assert!(status(503, "ServiceUnavailable", "x").is_transient());
        assert!(ApiCause::timeout(std::time::Duration::from_secs(1)).is_transient());
        assert!(!status(409, "Conflict", "x").is_transient());
        assert!(!status(422, "Invalid", "x").is_transient());
        assert!(!status(403, "Forbidden", "x").is_transient());
    }

    #[test]
    fn errors_without_an_http_answer_are_transient_only_when_the_connection_failed() {
        use std::io::{Error as Io, ErrorKind};
        let cause = |e: kube::Error| ApiCause::from_kube(e);
        let service = |e: Box<dyn std::error::Error + Send + Sync>| kube::Error::Service(e);
        // Retried: the connection was refused, reset or timed out under the service stack.
        assert!(
            cause(service(Box::new(Io::new(
                ErrorKind::ConnectionRefused,
                "connection refused"
            ))))
            .is_transient()
        );
        assert!(
            cause(service(Box::new(Io::new(
                ErrorKind::ConnectionReset,
                "reset"
            ))))
            .is_transient()
        );
        assert!(
            cause(kube::Error::ReadEvents(Io::new(
                ErrorKind::UnexpectedEof,
                "eof"
            )))
            .is_transient()
        );
        // Final: an undecodable answer, a failed auth exec plugin (even one that failed with
        // an I/O error), TLS and configuration problems.
        let decode = serde_json::from_str::<serde_json::Value>("{not json").unwrap_err();
        assert!(!cause(kube::Error::SerdeError(decode)).is_transient());
        assert!(
            !cause(kube::Error::Auth(kube::client::AuthError::AuthExecStart(
                Io::new(ErrorKind::NotFound, "gke-gcloud-auth-plugin not found")
            )))
            .is_transient()
        );
        assert!(
            !cause(service(Box::new(kube::client::AuthError::ExecPluginFailed))).is_transient()
        );
        assert!(
            !cause(service(Box::new(kube::Error::Auth(
                kube::client::AuthError::AuthExecStart(Io::new(ErrorKind::NotFound, "x"))
            ))))
            .is_transient()
        );
        assert!(!cause(kube::Error::TlsRequired).is_transient());
        assert!(!cause(kube::Error::LinesCodecMaxLineLengthExceeded).is_transient());
        // A service error that is not I/O (another middleware's failure) is final too.
        assert!(!cause(service("layer refused the request".into())).is_transient());
    }

    #[test]
    fn conflict_names_every_manager() {
        let c = status(
            409,
            "Conflict",
            "Apply failed with 2 conflicts: conflict with \"kubectl\" using apps/v1: .spec.replicas, conflict with \"hpa\" using apps/v1: .spec.replicas",
        );
        assert!(c.is_apply_conflict());
        assert_eq!(c.conflicting_managers(), vec!["kubectl", "hpa"]);
        assert!(!status(409, "AlreadyExists", "pods \"x\" already exists").is_apply_conflict());
    }

    #[test]
    fn the_servers_object_dump_is_left_out_of_the_message() {
        // kube-apiserver 1.34's answer to a PVC size change on an unbound claim.
        let pvc = "PersistentVolumeClaim \"data\" is invalid: spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n@@ -6,7 +6,7 @@\n \t\"Resources\": {\n-\t\t\"storage\": \"1Gi\"\n+\t\t\"storage\": \"2Gi\"\n";
        assert_eq!(
            one_line(without_object_dump(pvc)),
            "PersistentVolumeClaim \"data\" is invalid: spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
        );
        let pod = "Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`\n  core.PodSpec{\n  \tVolumes: nil,\n  }\n";
        assert_eq!(
            one_line(without_object_dump(pod)),
            "Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
        );
        let plain = "a\nb {";
        assert_eq!(without_object_dump(plain), plain);
    }

    #[test]
    fn immutable_errors_are_recognised_by_their_message() {
        assert!(status(422, "Invalid", "StatefulSet.apps \"c\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas' are forbidden").is_immutable());
        assert!(status(422, "Invalid", "Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`").is_immutable());
        assert!(status(422, "Invalid", "PersistentVolumeClaim \"d\" is invalid: spec: Forbidden: spec is immutable after creation except resources.requests").is_immutable());
        assert!(!status(422, "Invalid", "spec.replicas: Invalid value: -1").is_immutable());
    }

    #[test]
    fn retry_after_and_the_last_status_are_kept() {
        let answer: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "message": "slow down", "reason": "TooManyRequests",
            "code": 429, "details": {"retryAfterSeconds": 3}
        }))
        .unwrap();
        let mut c = ApiCause::from_kube(kube::Error::Api(Box::new(answer)));
        assert_eq!(c.retry_after, Some(std::time::Duration::from_secs(3)));
        c.attempts = 5;
        assert_eq!(
            c.to_string(),
            "after 5 attempts: 429 TooManyRequests: slow down"
        );
        assert_eq!(status_retry_after_none().retry_after, None);
        // A body that is not a Status (an apiserver filter's plain-text 429): kube's
        // placeholder reason becomes the HTTP reason phrase.
        let c = status(
            429,
            KUBE_UNPARSED_REASON,
            "Too many requests, please try again later.",
        );
        assert_eq!(
            c.to_string(),
            "429 Too Many Requests: Too many requests, please try again later."
        );
    }

    fn status_retry_after_none() -> ApiCause {
        status(503, "ServiceUnavailable", "down")
    }

    #[test]
    fn display_is_one_line_without_debug_dumps() {
        let c = status(500, "InternalError", "etcd\nleader changed");
        assert_eq!(c.to_string(), "500 InternalError: etcd leader changed");
    }
}
