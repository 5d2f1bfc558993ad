//! Wire and disk records generated from `proto/`: the Raft records (at this
//! module's root), etcd's v3 API (`etcdserverpb`, `mvccpb`, `authpb`, and the lock
//! and election services `v3lockpb`, `v3electionpb`), the command a log
//! entry carries (`raftkvpb`), and the peer protocol (`raftpeer`).
//!
//! These are the one definition of `Entry`, `HardState`, `ConfState` and
//! `SnapshotMeta`: the core, the stores and (later) the peer transport all use
//! them as they are, so an entry is never converted on the hot path.

#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/raftpb.rs"));

/// The Raft records' package as code generated for the other packages
/// names it (a sibling `raftpb`): it is this module's root.
use crate::proto as raftpb;

pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

pub mod raftkvpb {
    include!(concat!(env!("OUT_DIR"), "/raftkvpb.rs"));

    impl Command {
        /// A command carrying `request`, from nobody in particular (the
        /// cluster itself); a client's carries its stamp too.
        pub fn new(request: command::Request) -> Command {
            Command { request: Some(request), stamp: None }
        }
    }
}

pub mod raftpeer {
    include!(concat!(env!("OUT_DIR"), "/raftpeer.rs"));
}

/// An alarm as etcd prints one (`etcdctl alarm list`): `memberID:N alarm:NOSPACE`.
impl std::fmt::Display for etcdserverpb::AlarmMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match etcdserverpb::AlarmType::try_from(self.alarm) {
            Ok(t) => write!(f, "memberID:{} alarm:{}", self.member_id, t.as_str_name()),
            Err(_) => write!(f, "memberID:{} alarm:{}", self.member_id, self.alarm),
        }
    }
}

impl Entry {
    /// A normal entry carrying a client command (or, empty, a leader's no-op).
    pub fn normal(index: u64, term: u64, data: bytes::Bytes) -> Entry {
        Entry { index, term, entry_type: EntryType::EntryNormal as i32, data }
    }

    /// Whether this entry carries a configuration change.
    pub fn is_conf_change(&self) -> bool {
        self.entry_type == EntryType::EntryConfChange as i32 || self.entry_type == EntryType::EntryConfChangeV2 as i32
    }

    /// A configuration change entry carrying `change`.
    pub fn conf_change(index: u64, term: u64, change: &ConfChange) -> Entry {
        use prost::Message as _;
        let data = change.encode_to_vec().into();
        Entry { index, term, entry_type: EntryType::EntryConfChangeV2 as i32, data }
    }

    /// The change a configuration change entry carries (entries written
    /// before changes had a context decode with an empty one).
    pub fn decode_conf_change(&self) -> Result<ConfChange, prost::DecodeError> {
        use prost::Message as _;
        if self.entry_type == EntryType::EntryConfChange as i32 {
            return Ok(ConfChange { conf: Some(ConfState::decode(self.data.clone())?), context: bytes::Bytes::new() });
        }
        let mut change = ConfChange::decode(self.data.clone())?;
        // proto3 cannot tell an empty configuration from a missing one.
        change.conf.get_or_insert_with(ConfState::default);
        Ok(change)
    }
}

impl ConfState {
    /// A configuration of voters only.
    pub fn with_voters(voters: impl IntoIterator<Item = u64>) -> ConfState {
        let mut voters: Vec<u64> = voters.into_iter().collect();
        voters.sort_unstable();
        voters.dedup();
        ConfState { voters, learners: Vec::new() }
    }
}
