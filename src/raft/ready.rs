//! The core's output: everything the driver must do, in order, after an input.

use crate::proto::{Entry, HardState, SnapshotMeta};

use super::{Message, ReadState};

/// One batch of work for the driver. Do it in this order:
///
/// 1. send `messages` (they need nothing durable; the leader's appends go out
///    while it writes its own log, Raft thesis §10.2.1);
/// 2. install `snapshot` if any, then persist `entries` (replacing any stored
///    entries from the first one's index on) and `hard_state`, as one synced
///    write;
/// 3. send `persisted_messages` (votes and acknowledgements promising what
///    step 2 made durable);
/// 4. apply `committed_entries` in order and serve `read_states` once their
///    index is applied;
/// 5. call [`Raft::advance`](super::Raft::advance) with this Ready.
#[derive(Debug, Default)]
pub struct Ready {
    pub messages: Vec<Message>,
    pub snapshot: Option<SnapshotMeta>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub persisted_messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    /// Whether step 2 must be synced before step 3. False only when the write
    /// carries nothing but a new commit index, which a crash may lose: it is
    /// learned again from the leader.
    pub sync: bool,
}

impl Ready {
    /// Whether step 2 has anything to write.
    pub fn must_persist(&self) -> bool {
        self.snapshot.is_some() || !self.entries.is_empty() || self.hard_state.is_some()
    }
}
