//! Snapshots: a cut of the key-value map at an applied index, kept on disk so
//! the log can be compacted, sent to followers behind the log's start, and
//! used to restart without replaying the whole history.
//!
//! - [`file`]: the format (header, checked chunks of records, footer), read
//!   only if every checksum agrees.
//! - [`dir`]: where snapshot files live; written aside, fsynced, renamed.
//! - [`snapshotter`]: when to take one (every `--snapshot-entries` applied,
//!   and at least one entry per 4 keys of the map),
//!   writing it on a background thread from an O(1) copy of the map, how far
//!   the log may then be compacted, and which snapshot a restart starts from.
//!
//! The invariant everything here keeps: a snapshot holds only committed
//! state, so the snapshot at a given index is the same on every member, and
//! a member's log always holds every entry after the snapshot it would
//! restart from.

pub mod dir;
pub mod file;
pub mod snapshotter;

use std::path::PathBuf;

pub use dir::{SnapshotDir, SnapshotFile};
pub use snapshotter::{Recovered, Snapshotter, recover};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("corrupt snapshot {path} at byte {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error(
        "no usable snapshot covers this member's log, which starts after index {log_start}{tried}; \
         its state cannot be rebuilt here (move the data directory aside to rejoin as a new member)"
    )]
    NoUsableSnapshot { log_start: u64, tried: String },
}

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;
