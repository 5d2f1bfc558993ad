//! etcdctl's output formats for watch responses, so scripts written
//! against `etcdctl watch` read `raftkv watch` unchanged:
//!
//! - simple: per event its type, then the previous key and value (when
//!   asked for and known), then the key and value, one per line;
//! - json: the whole response on one line, as etcdctl's `-w json` prints
//!   Go's `clientv3.WatchResponse` (fields in Go's order, zero values left
//!   out where Go's `omitempty` leaves them out, bytes in base64).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use crate::proto::etcdserverpb::WatchResponse;
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::{Event, KeyValue};

/// etcdctl's simple format: nothing for a response without events.
pub fn simple(response: &WatchResponse) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = String::new();
    for event in &response.events {
        out.push_str(if event.r#type == EventType::Delete as i32 { "DELETE\n" } else { "PUT\n" });
        for kv in event.prev_kv.iter().chain(event.kv.iter()) {
            out.push_str(&format!("{}\n{}\n", text(&kv.key), text(&kv.value)));
        }
    }
    out
}

/// etcdctl's `-w json`: one line, with its newline.
pub fn json(response: &WatchResponse) -> String {
    let header = response.header.unwrap_or_default();
    let printed = GoWatchResponse {
        header: GoHeader {
            cluster_id: header.cluster_id,
            member_id: header.member_id,
            revision: header.revision,
            raft_term: header.raft_term,
        },
        events: response.events.iter().map(GoEvent::from).collect(),
        compact_revision: response.compact_revision,
        canceled: response.canceled,
        created: response.created,
    };
    let mut line = serde_json::to_string(&printed).expect("plain data serializes");
    line.push('\n');
    line
}

fn zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Serialize)]
struct GoWatchResponse {
    #[serde(rename = "Header")]
    header: GoHeader,
    /// Go's nil slice, for a response without events, prints `null`.
    #[serde(rename = "Events", serialize_with = "nil_if_empty")]
    events: Vec<GoEvent>,
    #[serde(rename = "CompactRevision")]
    compact_revision: i64,
    #[serde(rename = "Canceled")]
    canceled: bool,
    #[serde(rename = "Created")]
    created: bool,
}

fn nil_if_empty<S: serde::Serializer>(events: &[GoEvent], s: S) -> Result<S::Ok, S::Error> {
    if events.is_empty() { s.serialize_none() } else { s.collect_seq(events) }
}

#[derive(Serialize)]
struct GoHeader {
    #[serde(skip_serializing_if = "zero")]
    cluster_id: u64,
    #[serde(skip_serializing_if = "zero")]
    member_id: u64,
    #[serde(skip_serializing_if = "zero")]
    revision: i64,
    #[serde(skip_serializing_if = "zero")]
    raft_term: u64,
}

#[derive(Serialize)]
struct GoEvent {
    /// PUT is 0, which `omitempty` leaves out; DELETE is 1.
    #[serde(rename = "type", skip_serializing_if = "zero")]
    kind: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    kv: Option<GoKeyValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_kv: Option<GoKeyValue>,
}

impl From<&Event> for GoEvent {
    fn from(e: &Event) -> GoEvent {
        GoEvent {
            kind: e.r#type,
            kv: e.kv.as_ref().map(GoKeyValue::from),
            prev_kv: e.prev_kv.as_ref().map(GoKeyValue::from),
        }
    }
}

#[derive(Serialize)]
struct GoKeyValue {
    #[serde(skip_serializing_if = "String::is_empty")]
    key: String,
    #[serde(skip_serializing_if = "zero")]
    create_revision: i64,
    #[serde(skip_serializing_if = "zero")]
    mod_revision: i64,
    #[serde(skip_serializing_if = "zero")]
    version: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    value: String,
    #[serde(skip_serializing_if = "zero")]
    lease: i64,
}

impl From<&KeyValue> for GoKeyValue {
    fn from(kv: &KeyValue) -> GoKeyValue {
        GoKeyValue {
            key: STANDARD.encode(&kv.key),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: STANDARD.encode(&kv.value),
            lease: kv.lease,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::ResponseHeader;

    #[test]
    fn json_is_etcdctl_s_line_for_a_put_and_a_delete() {
        let header = ResponseHeader { cluster_id: 1, member_id: 2, revision: 5, raft_term: 3 };
        let put = Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: "foo".into(),
                value: "bar".into(),
                create_revision: 4,
                mod_revision: 4,
                version: 1,
                lease: 0,
            }),
            prev_kv: None,
        };
        let delete = Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue { key: "foo".into(), mod_revision: 5, ..Default::default() }),
            prev_kv: None,
        };
        let response = WatchResponse { header: Some(header), events: vec![put, delete], ..Default::default() };
        assert_eq!(
            json(&response),
            "{\"Header\":{\"cluster_id\":1,\"member_id\":2,\"revision\":5,\"raft_term\":3},\"Events\":[\
             {\"kv\":{\"key\":\"Zm9v\",\"create_revision\":4,\"mod_revision\":4,\"version\":1,\"value\":\"YmFy\"}},\
             {\"type\":1,\"kv\":{\"key\":\"Zm9v\",\"mod_revision\":5}}],\
             \"CompactRevision\":0,\"Canceled\":false,\"Created\":false}\n"
        );
        assert_eq!(simple(&response), "PUT\nfoo\nbar\nDELETE\nfoo\n\n");
    }
}
