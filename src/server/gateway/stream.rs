//! The gateway's streaming methods, as grpc-gateway streams them:
//!
//! - the request body is a sequence of JSON messages (whitespace between
//!   them, as Go's `json.Decoder` reads them), decoded as they arrive;
//! - the answer is one line per message, `{"result": ...}`, flushed as it
//!   is made; an error ends the stream with a last line
//!   `{"error": {"grpc_code", "http_code", "message", "http_status"}}`.
//!
//! A watch outlives its request body: curl sends the create request and
//! waits, and the watch lasts until the client hangs up (etcd does the
//! same). A keep-alive stream ends once every request in the body has been
//! answered.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Extensions, HeaderMap};
use axum::response::Response;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::{http_status, streaming};
use crate::proto::etcdserverpb::{LeaseKeepAliveRequest, WatchRequest};
use crate::server::auth::peer_of;
use crate::server::shared::Shared;

/// Requests decoded from a body, and answer lines, in flight at once.
const QUEUE: usize = 16;

/// `POST /v3/watch`.
pub(super) async fn watch(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Body,
) -> Response {
    let caller = match shared.caller_from_headers(&headers, peer_of(&extensions)) {
        Ok(caller) => caller,
        Err(status) => return super::error(&status),
    };
    let requests = requests::<WatchRequest>(body).chain(tokio_stream::pending());
    reply(ReceiverStream::new(crate::server::watch::serve(shared, caller, requests)))
}

/// `POST /v3/lease/keepalive`.
pub(super) async fn keep_alive(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Body,
) -> Response {
    let caller = shared.caller_from_headers(&headers, peer_of(&extensions));
    if let Err(status) = caller.and_then(|caller| shared.check_authenticated(&caller)) {
        return super::error(&status);
    }
    reply(crate::server::lease::service::keep_alive(shared, requests::<LeaseKeepAliveRequest>(body)))
}

/// The messages of a request body, decoded as its bytes arrive; a message
/// that does not parse ends the stream with `InvalidArgument`.
fn requests<T>(body: Body) -> ReceiverStream<Result<T, Status>>
where
    T: DeserializeOwned + Send + 'static,
{
    let (out, requests) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::select! {
                chunk = chunks.next() => chunk,
                _ = out.closed() => return,
            };
            let ended = match chunk {
                Some(Ok(bytes)) => {
                    buffer.extend_from_slice(&bytes);
                    false
                }
                Some(Err(e)) => {
                    let _ = out.send(Err(Status::invalid_argument(format!("reading the request body: {e}")))).await;
                    return;
                }
                None => true,
            };
            match decode_complete::<T>(&mut buffer, ended) {
                Ok(messages) => {
                    for message in messages {
                        if out.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(status) => {
                    let _ = out.send(Err(status)).await;
                    return;
                }
            }
            if ended {
                return;
            }
        }
    });
    ReceiverStream::new(requests)
}

/// Takes the complete messages at the front of `buffer`, leaving a partial
/// one there for more bytes; once the body has `ended`, a partial message
/// is an error.
fn decode_complete<T: DeserializeOwned>(buffer: &mut Vec<u8>, ended: bool) -> Result<Vec<T>, Status> {
    let mut messages = Vec::new();
    let mut parsed = serde_json::Deserializer::from_slice(buffer).into_iter::<T>();
    let consumed = loop {
        match parsed.next() {
            Some(Ok(message)) => messages.push(message),
            Some(Err(e)) if e.is_eof() && !ended => break parsed.byte_offset(),
            Some(Err(e)) => return Err(Status::invalid_argument(e.to_string())),
            None => break parsed.byte_offset(),
        }
    };
    buffer.drain(..consumed);
    Ok(messages)
}

/// Streams `responses` as grpc-gateway does, until they end, one fails, or
/// the client hangs up (which drops `responses`, ending what produces them).
pub(super) fn reply<S, T>(mut responses: S) -> Response
where
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
    T: Serialize + Send + 'static,
{
    let (out, lines) = mpsc::channel::<Result<Bytes, Infallible>>(QUEUE);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = responses.next() => next,
                _ = out.closed() => return,
            };
            let Some(next) = next else { return };
            let failed = next.is_err();
            if out.send(Ok(line(next))).await.is_err() || failed {
                return;
            }
        }
    });
    streaming(Body::from_stream(ReceiverStream::new(lines)))
}

/// One line of a streamed answer; fields in grpc-gateway's order.
#[derive(Serialize)]
enum Line<'a, T> {
    #[serde(rename = "result")]
    Result(&'a T),
    #[serde(rename = "error")]
    Error { grpc_code: i32, http_code: u16, message: &'a str, http_status: &'a str },
}

fn line<T: Serialize>(item: Result<T, Status>) -> Bytes {
    let mut line = match &item {
        Ok(message) => serde_json::to_vec(&Line::Result(message)),
        Err(status) => {
            let http = http_status(status.code());
            let error: Line<'_, ()> = Line::Error {
                grpc_code: status.code() as i32,
                http_code: http.as_u16(),
                message: status.message(),
                http_status: http.canonical_reason().unwrap_or_default(),
            };
            serde_json::to_vec(&error)
        }
    }
    .expect("generated messages always serialize");
    line.push(b'\n');
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_messages_are_taken_and_a_partial_one_waits_for_more_bytes() {
        let mut buffer = br#"{"ID": 7} {"ID":"8"}{"I"#.to_vec();
        let got: Vec<LeaseKeepAliveRequest> = decode_complete(&mut buffer, false).unwrap();
        assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(buffer, br#"{"I"#);
        buffer.extend_from_slice(br#"D": 9}"#);
        let got: Vec<LeaseKeepAliveRequest> = decode_complete(&mut buffer, true).unwrap();
        assert_eq!(got[0].id, 9);
        assert!(buffer.iter().all(u8::is_ascii_whitespace));
    }

    #[test]
    fn a_partial_message_at_the_end_of_the_body_or_bad_json_is_invalid_argument() {
        let mut partial = br#"{"ID": 7"#.to_vec();
        let err = decode_complete::<LeaseKeepAliveRequest>(&mut partial, true).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let mut bad = br#"{"ID": 7} nonsense"#.to_vec();
        assert!(decode_complete::<LeaseKeepAliveRequest>(&mut bad, false).is_err());
    }

    #[test]
    fn an_error_line_names_the_grpc_and_http_codes() {
        let line = line::<()>(Err(Status::not_found("etcdserver: requested lease not found")));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["error"]["grpc_code"], 5);
        assert_eq!(value["error"]["http_code"], 404);
        assert_eq!(value["error"]["http_status"], "Not Found");
    }
}
