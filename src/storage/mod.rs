//! Durability of the Raft core's state: term, vote, commit index, log, and
//! the compaction point with the configuration in force there.
//!
//! A [`LogStore`] makes one Ready's writes durable as one atomic batch (group
//! commit), and gives the core back exactly what it made durable at start-up.
//! Every stored record is CRC-framed ([`frame`]); a record that fails its check
//! is a [`StorageError::Corruption`] naming where it is, never wrong data.

mod frame;
mod memory;
mod rocks;

pub use frame::{decode_frame, encode_frame};
pub use memory::MemStore;
pub use rocks::{Defragmenter, RocksStore};

use crate::proto::{ConfState, Entry, HardState, SnapshotMeta};
use crate::raft::InitialState;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb failed to {op}: {source}")]
    Rocks { op: String, source: rocksdb::Error },
    #[error("corrupt record in column family `{cf}` at {key}: {reason}")]
    Corruption { cf: &'static str, key: String, reason: String },
    #[error("invalid write: {0}")]
    InvalidWrite(String),
    #[error("log entry {index} is not available (log holds {first}..={last})")]
    Unavailable { index: u64, first: u64, last: u64 },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// One Ready's worth of writes, applied atomically in this order.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWrite<'a> {
    /// Reset the log to start after this point (an installed snapshot).
    pub snapshot: Option<&'a SnapshotMeta>,
    /// Entries to store; any stored entries from the first one's index on are
    /// replaced (a conflicting suffix is deleted).
    pub entries: &'a [Entry],
    pub hard_state: Option<&'a HardState>,
    /// fsync before returning. Only a write that carries nothing a peer is
    /// promised (a new commit index alone) may skip it.
    pub sync: bool,
}

impl<'a> LogWrite<'a> {
    /// The write for a core's Ready.
    pub fn from_ready(rd: &'a crate::raft::Ready) -> LogWrite<'a> {
        LogWrite {
            snapshot: rd.snapshot.as_ref(),
            entries: &rd.entries,
            hard_state: rd.hard_state.as_ref(),
            sync: rd.sync,
        }
    }
}

pub trait LogStore {
    /// Writes a brand-new member's initial configuration. Fails if the store
    /// already holds state.
    fn bootstrap(&mut self, conf: &ConfState) -> Result<()>;

    /// Everything the core starts from: hard state, compaction point,
    /// configuration there, and every entry after it.
    fn initial_state(&self) -> Result<InitialState>;

    fn hard_state(&self) -> Result<HardState>;

    /// The compaction point (index 0 for a log never compacted).
    fn snapshot_meta(&self) -> Result<SnapshotMeta>;

    fn first_index(&self) -> u64;

    fn last_index(&self) -> u64;

    /// The term of the entry at `index`; the compaction point's term for it.
    fn term(&self, index: u64) -> Result<u64>;

    /// Entries `lo..=hi`, every one present and verified.
    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>>;

    /// Applies one Ready's writes atomically.
    fn persist(&mut self, write: LogWrite<'_>) -> Result<()>;

    /// Drops entries up to `meta.index`, which a durable snapshot covers.
    fn compact(&mut self, meta: &SnapshotMeta) -> Result<()>;
}

/// Checks that `entries` may be written to a log holding `first..=last`:
/// contiguous, and starting inside the log or right after it.
fn check_append(entries: &[Entry], first: u64, last: u64) -> Result<()> {
    let Some(head) = entries.first() else { return Ok(()) };
    if head.index < first || head.index > last + 1 {
        return Err(StorageError::InvalidWrite(format!(
            "entries start at {} but the log holds {first}..={last}",
            head.index
        )));
    }
    if let Some(w) = entries.windows(2).find(|w| w[1].index != w[0].index + 1) {
        return Err(StorageError::InvalidWrite(format!("entries jump from {} to {}", w[0].index, w[1].index)));
    }
    Ok(())
}
