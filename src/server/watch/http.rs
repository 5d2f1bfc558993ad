//! `GET /v1/watch/{key}` for curl: a watch as newline-delimited JSON
//! (`application/x-ndjson`), one line per event, served by the engine in
//! [`super`] until the client hangs up.
//!
//! Query: `prefix=true` (every key starting with KEY), `rev=N` (from
//! revision N, its history first; default: from now on), `prev_kv=true`
//! (each change also carries the value before it). Lines:
//!
//! - `{"created":true,"revision":N}` first: the watch sees every change
//!   after N (or from `rev` on);
//! - `{"type":"PUT","key":…,"value":…,"create_revision":…,"mod_revision":…,"version":…}`
//!   and `{"type":"DELETE","key":…,"mod_revision":…}`, with `"prev_value"`
//!   when asked for and known;
//! - last, if the watch ends from the server's side: `{"canceled":true,
//!   "reason":…}` (with `compact_revision` when `rev` is below the
//!   compaction point) or `{"error":…}` (the member is stopping).
//!
//! Keys and values are UTF-8 (invalid bytes replaced), as in the rest of
//! the `/v1` surface.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::kv::prefix_end;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::proto::mvccpb::event::EventType;
use crate::server::http::{HttpCaller, HttpError, flag, revision_param, text};
use crate::server::shared::Shared;

/// Lines queued for a client before the stream waits for it.
const LINE_QUEUE: usize = 16;

pub(crate) async fn watch(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let start_revision = revision_param(&q)?;
    let range_end = if flag(&q, "prefix") { prefix_end(key.as_bytes()) } else { Vec::new() };
    let create = WatchCreateRequest {
        key: key.into(),
        range_end: range_end.into(),
        start_revision,
        prev_kv: flag(&q, "prev_kv"),
        ..Default::default()
    };
    let request = WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
    // The request side stays open: the watch lives as long as the response.
    let requests = tokio_stream::iter([Ok(request)]).chain(tokio_stream::pending());
    let mut responses = super::serve(shared, caller, requests);
    let (lines, body) = mpsc::channel::<Result<Bytes, Infallible>>(LINE_QUEUE);
    tokio::spawn(async move {
        // Ends when the watch ends or the client hangs up (the body is
        // dropped), at once even on a quiet key; dropping `responses` then
        // ends the engine's task and its watcher.
        loop {
            let item = tokio::select! {
                item = responses.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
                _ = lines.closed() => return,
            };
            let (text, last) = ndjson(item);
            if (!text.is_empty() && lines.send(Ok(text.into())).await.is_err()) || last {
                return;
            }
        }
    });
    Ok(([(CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(ReceiverStream::new(body))).into_response())
}

/// The lines for one response of the engine, and whether it is the last.
fn ndjson(item: Result<WatchResponse, Status>) -> (String, bool) {
    let response = match item {
        Ok(response) => response,
        Err(status) => return (line(&json!({ "error": status.message() })), true),
    };
    let revision = response.header.as_ref().map_or(0, |h| h.revision);
    if response.canceled {
        let mut canceled = json!({ "canceled": true, "reason": response.cancel_reason });
        if response.compact_revision != 0 {
            canceled["compact_revision"] = json!(response.compact_revision);
        }
        return (line(&canceled), true);
    }
    if response.created {
        return (line(&json!({ "created": true, "revision": revision })), false);
    }
    let mut out = String::new();
    for event in &response.events {
        let Some(kv) = &event.kv else { continue };
        let mut value = if event.r#type == EventType::Delete as i32 {
            json!({ "type": "DELETE", "key": text(&kv.key), "mod_revision": kv.mod_revision })
        } else {
            json!({
                "type": "PUT", "key": text(&kv.key), "value": text(&kv.value),
                "create_revision": kv.create_revision, "mod_revision": kv.mod_revision, "version": kv.version,
            })
        };
        if let Some(prev) = &event.prev_kv {
            value["prev_value"] = json!(text(&prev.value));
        }
        out.push_str(&line(&value));
    }
    (out, false)
}

fn line(value: &Value) -> String {
    let mut s = value.to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::ResponseHeader;
    use crate::proto::mvccpb::{Event, KeyValue};

    fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader { revision, ..Default::default() })
    }

    #[test]
    fn each_event_is_one_json_line_and_a_cancel_ends_the_stream() {
        let created = WatchResponse { created: true, header: header(7), ..Default::default() };
        assert_eq!(ndjson(Ok(created)), ("{\"created\":true,\"revision\":7}\n".into(), false));

        let kv = |value: &str, revision| KeyValue {
            key: "a".into(),
            value: value.to_string().into(),
            create_revision: 8,
            mod_revision: revision,
            version: revision - 7,
            lease: 0,
        };
        let put = Event { r#type: EventType::Put as i32, kv: Some(kv("2", 9)), prev_kv: Some(kv("1", 8)) };
        let delete = Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue { key: "a".into(), mod_revision: 10, ..Default::default() }),
            prev_kv: None,
        };
        let (text, last) =
            ndjson(Ok(WatchResponse { events: vec![put, delete], header: header(10), ..Default::default() }));
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(!last);
        assert_eq!(
            lines,
            vec![
                json!({"type":"PUT","key":"a","value":"2","create_revision":8,"mod_revision":9,"version":2,"prev_value":"1"}),
                json!({"type":"DELETE","key":"a","mod_revision":10}),
            ]
        );

        let compacted = WatchResponse {
            canceled: true,
            compact_revision: 5,
            cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
            ..Default::default()
        };
        let (text, last) = ndjson(Ok(compacted));
        assert!(last && text.contains("\"compact_revision\":5") && text.contains("compacted"), "{text}");
        let (text, last) = ndjson(Err(Status::unavailable("etcdserver: server stopped")));
        assert!(last && text == "{\"error\":\"etcdserver: server stopped\"}\n", "{text}");
    }
}
