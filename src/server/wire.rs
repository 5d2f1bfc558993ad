//! The core's messages on the peer wire: `raft::Message` ⇄ `PeerMessage`.

use crate::proto::raftpeer::{self as pb, peer_message::Body as PbBody};
use crate::raft::{Body, ConflictHint, Message};

/// Encodes a message for the peer stream. A snapshot announcement is not
/// one: the snapshot travels on its own InstallSnapshot call (`None`).
pub fn to_wire(cluster_id: u64, m: Message) -> Option<pb::PeerMessage> {
    let body = match m.body {
        Body::Append { prev_index, prev_term, entries, commit } => {
            PbBody::Append(pb::Append { prev_index, prev_term, entries, commit })
        }
        Body::AppendResponse { reject, index, hint } => PbBody::AppendResponse(pb::AppendResponse {
            reject,
            index,
            has_hint: hint.is_some(),
            hint_term: hint.map_or(0, |h| h.term),
            hint_index: hint.map_or(0, |h| h.index),
        }),
        Body::Vote { pre, force, last_index, last_term } => {
            PbBody::Vote(pb::Vote { pre, force, last_index, last_term })
        }
        Body::VoteResponse { pre, granted } => PbBody::VoteResponse(pb::VoteResponse { pre, granted }),
        Body::Heartbeat { commit, read_seq } => PbBody::Heartbeat(pb::Heartbeat { commit, read_seq }),
        Body::HeartbeatResponse { read_seq } => PbBody::HeartbeatResponse(pb::HeartbeatResponse { read_seq }),
        Body::TimeoutNow => PbBody::TimeoutNow(pb::TimeoutNow {}),
        Body::Snapshot { .. } => return None,
        Body::ReadIndex { ctx } => PbBody::ReadIndex(pb::ReadIndex { ctx }),
        Body::ReadIndexResponse { ctx, index } => PbBody::ReadIndexResponse(pb::ReadIndexResponse { ctx, index }),
    };
    Some(pb::PeerMessage { cluster_id, from: m.from, to: m.to, term: m.term, body: Some(body) })
}

/// Decodes a peer message; an empty body is malformed.
pub fn from_wire(m: pb::PeerMessage) -> Result<Message, String> {
    let body = match m.body.ok_or_else(|| format!("message from {} has no body", m.from))? {
        PbBody::Append(a) => {
            Body::Append { prev_index: a.prev_index, prev_term: a.prev_term, entries: a.entries, commit: a.commit }
        }
        PbBody::AppendResponse(r) => Body::AppendResponse {
            reject: r.reject,
            index: r.index,
            hint: r.has_hint.then_some(ConflictHint { term: r.hint_term, index: r.hint_index }),
        },
        PbBody::Vote(v) => Body::Vote { pre: v.pre, force: v.force, last_index: v.last_index, last_term: v.last_term },
        PbBody::VoteResponse(v) => Body::VoteResponse { pre: v.pre, granted: v.granted },
        PbBody::Heartbeat(h) => Body::Heartbeat { commit: h.commit, read_seq: h.read_seq },
        PbBody::HeartbeatResponse(h) => Body::HeartbeatResponse { read_seq: h.read_seq },
        PbBody::TimeoutNow(_) => Body::TimeoutNow,
        PbBody::ReadIndex(r) => Body::ReadIndex { ctx: r.ctx },
        PbBody::ReadIndexResponse(r) => Body::ReadIndexResponse { ctx: r.ctx, index: r.index },
    };
    Ok(Message { from: m.from, to: m.to, term: m.term, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Entry, SnapshotMeta};
    use bytes::Bytes;

    #[test]
    fn every_body_round_trips() {
        let bodies = vec![
            Body::Append {
                prev_index: 4,
                prev_term: 2,
                entries: vec![Entry::normal(5, 3, Bytes::from("x"))],
                commit: 4,
            },
            Body::AppendResponse { reject: true, index: 9, hint: Some(ConflictHint { term: 2, index: 7 }) },
            Body::AppendResponse { reject: false, index: 9, hint: None },
            Body::Vote { pre: true, force: false, last_index: 3, last_term: 1 },
            Body::VoteResponse { pre: false, granted: true },
            Body::Heartbeat { commit: 3, read_seq: 8 },
            Body::HeartbeatResponse { read_seq: 8 },
            Body::TimeoutNow,
            Body::ReadIndex { ctx: Bytes::from("r") },
            Body::ReadIndexResponse { ctx: Bytes::from("r"), index: 12 },
        ];
        for body in bodies {
            let m = Message { from: 1, to: 2, term: 3, body };
            assert_eq!(from_wire(to_wire(77, m.clone()).unwrap()), Ok(m));
        }
        let snapshot = Body::Snapshot { meta: SnapshotMeta { index: 10, term: 2, conf: None } };
        assert!(to_wire(77, Message { from: 1, to: 2, term: 3, body: snapshot }).is_none());
        let empty = pb::PeerMessage { cluster_id: 77, from: 1, to: 2, term: 3, body: None };
        assert!(from_wire(empty).is_err());
    }
}
