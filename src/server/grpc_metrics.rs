//! `grpc_server_started_total`, `grpc_server_handled_total` and
//! `grpc_server_handling_seconds` (which etcd exports with
//! `--metrics extensive`; here always, it costs one labelled lookup), with
//! go-grpc-prometheus's labels (`grpc_type`, `grpc_service`,
//! `grpc_method`, `grpc_code`), counted by a layer on the client port's
//! gRPC routes, so etcd's dashboards' request-rate and error-rate panels
//! read raftkv.
//!
//! A call is handled when its status is known: at once for a
//! trailers-only answer (every error a handler returns), else when the
//! answer's trailers pass (a unary answer's end, or a stream's last word).
//! A call whose answer is dropped before its trailers (the client went
//! away) counts as `Canceled`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use super::metrics::Metrics;

/// Counts the gRPC call `request` is (other requests pass uncounted).
pub async fn count(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let Some((service, method)) = grpc_path(request.uri().path()) else { return next.run(request).await };
    if !is_grpc(request.headers()) {
        return next.run(request).await;
    }
    let (service, method) = (service.to_string(), method.to_string());
    let kind = call_type(&service, &method);
    metrics.grpc_started.with_label_values(&[kind, &service, &method]).inc();
    let started = std::time::Instant::now();
    let handled = move |code: &str| {
        metrics.grpc_handled.with_label_values(&[kind, &service, &method, code]).inc();
        let took = started.elapsed().as_secs_f64();
        metrics.grpc_handling.with_label_values(&[kind, &service, &method]).observe(took);
    };
    let response = next.run(request).await;
    if let Some(code) = status_of(response.headers()) {
        handled(code);
        return response;
    }
    response.map(|body| {
        let done = Done { handled: Some(Box::new(handled)) };
        Body::new(Counted { inner: body, done })
    })
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(axum::http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `/etcdserverpb.KV/Range` → (`etcdserverpb.KV`, `Range`).
fn grpc_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (service.contains('.') && !method.is_empty() && !method.contains('/')).then_some((service, method))
}

fn call_type(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive") => "bidi_stream",
        ("etcdserverpb.Maintenance", "Snapshot") | ("v3electionpb.Election", "Observe") => "server_stream",
        _ => "unary",
    }
}

/// The name of the gRPC status in `headers` (or trailers), if one is there.
fn status_of(headers: &HeaderMap) -> Option<&'static str> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(code_name(tonic::Code::from_i32(code)))
}

/// go-grpc-prometheus's code names (Go's `codes.Code.String()`).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Counts a call as handled with its code, and how long it took.
type HandledCounter = Box<dyn FnOnce(&str) + Send + Sync>;

/// Counts the call once: with the code its trailers carry, or `Canceled`
/// if the answer is dropped first.
struct Done {
    handled: Option<HandledCounter>,
}

impl Done {
    fn finish(&mut self, code: &str) {
        if let Some(handled) = self.handled.take() {
            handled(code);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.finish("Canceled");
    }
}

/// An answer's body, watched for the trailers that end the call.
struct Counted {
    inner: Body,
    done: Done,
}

impl HttpBody for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    self.done.finish(code);
                }
            }
            // Ended without a status: the call ended as far as gRPC goes.
            Poll::Ready(None) => self.done.finish("OK"),
            Poll::Ready(Some(Err(_))) => self.done.finish("Unknown"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_name_the_service_and_method() {
        assert_eq!(grpc_path("/etcdserverpb.KV/Range"), Some(("etcdserverpb.KV", "Range")));
        assert_eq!(grpc_path("/v3/kv/range"), None);
        assert_eq!(grpc_path("/metrics"), None);
        assert_eq!(call_type("etcdserverpb.Watch", "Watch"), "bidi_stream");
        assert_eq!(call_type("etcdserverpb.KV", "Put"), "unary");
    }

    #[test]
    fn status_codes_read_as_go_names_them() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(status_of(&headers), Some("NotFound"));
        headers.insert("grpc-status", "1".parse().unwrap());
        assert_eq!(status_of(&headers), Some("Canceled"));
        assert_eq!(status_of(&HeaderMap::new()), None);
    }
}
