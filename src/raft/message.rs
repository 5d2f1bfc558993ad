//! Messages between Raft peers, and the read states handed to the application.
//!
//! These are the core's own types: an enum per kind keeps every handler
//! exhaustive. The peer transport maps them to its wire format; the core never
//! sees bytes on a socket.

use bytes::Bytes;

use crate::proto::{Entry, SnapshotMeta};

/// A member's identity. `0` is never a member: it means "none" (no vote, no leader).
pub type NodeId = u64;

/// The absence of a node, in `vote` and `leader`.
pub const NONE: NodeId = 0;

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term (for a pre-vote request, the term it would campaign in).
    pub term: u64,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// Leader → follower: append `entries` after (`prev_index`, `prev_term`).
    Append {
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    },
    /// Follower → leader. Accepted: `index` is the follower's new match index.
    /// Rejected: `index` is the rejected `prev_index`, and the hint says where
    /// the follower's log diverges (Raft §5.3, "fast backup").
    AppendResponse {
        reject: bool,
        index: u64,
        hint: Option<ConflictHint>,
    },
    /// Candidate → all. `pre` is a pre-vote (Raft thesis §9.6): nobody changes
    /// term or vote for it. `force` is set by a leadership transfer, which
    /// overrides the receivers' leader lease.
    Vote {
        pre: bool,
        force: bool,
        last_index: u64,
        last_term: u64,
    },
    VoteResponse {
        pre: bool,
        granted: bool,
    },
    /// Leader → follower. `commit` is capped at the follower's match index.
    /// `read_seq` lets the reply confirm leadership for ReadIndex.
    Heartbeat {
        commit: u64,
        read_seq: u64,
    },
    HeartbeatResponse {
        read_seq: u64,
    },
    /// Leader → transfer target: campaign now.
    TimeoutNow,
    /// Leader → follower behind the log's first index: install the snapshot at
    /// `meta`. The data travels out of band (streamed by the server).
    Snapshot {
        meta: SnapshotMeta,
    },
    /// Follower → leader: a forwarded ReadIndex request.
    ReadIndex {
        ctx: Bytes,
    },
    /// Leader → follower: the read index for a forwarded request.
    ReadIndexResponse {
        ctx: Bytes,
        index: u64,
    },
}

/// Where a follower's log diverges from the leader's `prev_index`: the term it
/// has there (0 if its log is shorter) and the first index it holds of that term
/// (its last index + 1 if shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictHint {
    pub term: u64,
    pub index: u64,
}

impl Body {
    /// Whether the message must wait until the Ready's entries and hard state
    /// are durable. Votes and append acknowledgements promise durability; a
    /// candidate's vote requests count its own vote, which must survive a crash.
    pub(crate) fn needs_persist(&self) -> bool {
        matches!(
            self,
            Body::AppendResponse { .. } | Body::Vote { pre: false, .. } | Body::VoteResponse { pre: false, .. }
        )
    }
}

/// A read that became safe: once the state machine has applied `index`, a read
/// identified by `ctx` may be served linearizably.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: Bytes,
    pub index: u64,
}
