//! The Raft consensus core: pure, deterministic, with no I/O, clock or threads.
//!
//! Shaped like etcd's raft and raft-rs: a [`Raft`] takes inputs (`tick`,
//! `step`, `propose`, `read_index`, `transfer_leader`, membership changes)
//! and hands back a [`Ready`] of work for its driver (entries and hard state
//! to persist, messages to send before and after that, committed entries to
//! apply, reads that became safe). Everything a node decides follows from its
//! inputs and its seed, so a whole cluster runs inside one test thread.
//!
//! Features: randomized election timeouts, pre-vote, check-quorum with leader
//! leases, a no-op entry per new leader, commitment by counting current-term
//! replicas only, pipelined replication with a bounded in-flight window per
//! follower and fast backtracking by conflict term, leadership transfer,
//! ReadIndex, snapshots for followers behind the log's start, and
//! single-member configuration changes with learners.

mod config;
mod election;
mod error;
mod log;
mod membership;
mod message;
mod node;
mod progress;
mod read_index;
mod ready;
mod replication;

pub use config::Config;
pub use error::RaftError;
pub use message::{Body, ConflictHint, Message, NONE, NodeId, ReadState};
pub use node::{InitialState, Raft, Role};
pub use progress::ProgressState;
pub use ready::Ready;

#[cfg(test)]
mod tests;
