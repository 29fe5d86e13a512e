//! Makes an error answer's `Retry-After` header visible to the retry policy.
//!
//! kube turns an error answer into a [`kube::core::Status`] from its body, so the only
//! server-requested pause it exposes is `details.retryAfterSeconds`. The API server's
//! priority-and-fairness filter answers a throttled request with `429`, a `Retry-After`
//! header and a plain-text body ("Too many requests, please try again later."): no Status, so
//! the pause would be lost. [`RetryAfterLayer`] sits under kube's error handling and, for a
//! 429, 503 or 504 carrying `Retry-After: <seconds>`, rewrites the body into a Status holding
//! `details.retryAfterSeconds` (keeping a Status body's other fields, or the text as the
//! message). Every other answer passes through untouched and unbuffered (watches stream).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The layer for `kube::client::ClientBuilder::with_layer`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryAfterLayer;

impl<S> tower::Layer<S> for RetryAfterLayer {
    type Service = RetryAfter<S>;
    fn layer(&self, inner: S) -> RetryAfter<S> {
        RetryAfter(inner)
    }
}

/// The service [`RetryAfterLayer`] wraps around kube's stack.
#[derive(Clone, Debug)]
pub struct RetryAfter<S>(S);

impl<S, B, ReqBody> tower::Service<Request<ReqBody>> for RetryAfter<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Either<B, Full<Bytes>>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let resp = fut.await.map_err(Into::into)?;
            let Some(secs) = retry_after(&resp) else {
                return Ok(resp.map(Either::Left));
            };
            let (mut parts, body) = resp.into_parts();
            let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
            let status = with_retry_after(parts.status, &bytes, secs);
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            Ok(Response::from_parts(
                parts,
                Either::Right(Full::new(Bytes::from(status.to_string()))),
            ))
        })
    }
}

/// The seconds of a throttling or unavailable answer's `Retry-After` (the API server sends
/// seconds, never an HTTP date).
fn retry_after<B>(resp: &Response<B>) -> Option<u32> {
    matches!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
    .then(|| resp.headers().get(header::RETRY_AFTER))
    .flatten()
    .and_then(|v| v.to_str().ok())
    .and_then(|v| v.trim().parse().ok())
    .filter(|s| *s > 0)
}

/// The answer as a Status with `details.retryAfterSeconds` (a value already there wins).
fn with_retry_after(code: StatusCode, body: &[u8], secs: u32) -> Value {
    let mut status = match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.get("kind").and_then(Value::as_str) == Some("Status") => v,
        _ => json!({
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": String::from_utf8_lossy(body).trim(),
            "reason": code.canonical_reason().unwrap_or_default(),
            "code": code.as_u16(),
        }),
    };
    let details = status
        .as_object_mut()
        .map(|o| o.entry("details").or_insert_with(|| json!({})));
    if let Some(Value::Object(d)) = details
        && d.get("retryAfterSeconds")
            .and_then(Value::as_u64)
            .is_none_or(|s| s == 0)
    {
        d.insert("retryAfterSeconds".into(), secs.into());
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_text_429_becomes_a_status_with_the_pause() {
        let s = with_retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            b"Too many requests, please try again later.\n",
            2,
        );
        assert_eq!(
            s,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "Too many requests, please try again later.",
                   "reason": "Too Many Requests", "code": 429,
                   "details": {"retryAfterSeconds": 2}})
        );
        // A Status keeps its fields; its own retryAfterSeconds wins.
        let body = br#"{"kind":"Status","code":503,"reason":"ServiceUnavailable","message":"x","details":{"name":"a"}}"#;
        let s = with_retry_after(StatusCode::SERVICE_UNAVAILABLE, body, 4);
        assert_eq!(s["details"], json!({"name": "a", "retryAfterSeconds": 4}));
        assert_eq!(s["reason"], "ServiceUnavailable");
        let body = br#"{"kind":"Status","code":429,"details":{"retryAfterSeconds":1}}"#;
        let s = with_retry_after(StatusCode::TOO_MANY_REQUESTS, body, 9);
        assert_eq!(s["details"]["retryAfterSeconds"], 1);
    }

    #[test]
    fn only_throttling_answers_with_seconds_are_touched() {
        let resp = |code: u16, h: Option<&str>| {
            let mut b = Response::builder().status(code);
            if let Some(h) = h {
                b = b.header("retry-after", h);
            }
            b.body(()).unwrap()
        };
        assert_eq!(retry_after(&resp(429, Some("3"))), Some(3));
        assert_eq!(retry_after(&resp(503, Some(" 1 "))), Some(1));
        assert_eq!(retry_after(&resp(429, None)), None);
        assert_eq!(retry_after(&resp(200, Some("3"))), None);
        assert_eq!(retry_after(&resp(500, Some("3"))), None);
        assert_eq!(
            retry_after(&resp(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"))),
            None
        );
    }
}
