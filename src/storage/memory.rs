//! An in-memory log store with a power-cut model, for simulation.
//!
//! Writes land in a volatile view at once; `sync` makes everything written so
//! far durable. A [`MemStore::crash`] keeps the durable state plus a prefix of
//! the writes issued since the last sync (chosen by the caller), which is what
//! an ordered write-ahead log can leave behind when power is cut.

use super::{LogStore, LogWrite, Result, StorageError, check_append};
use crate::proto::{ConfState, Entry, HardState, SnapshotMeta};
use crate::raft::InitialState;

#[derive(Clone, Debug, Default, PartialEq)]
struct State {
    hard_state: HardState,
    offset: SnapshotMeta,
    entries: Vec<Entry>,
}

impl State {
    fn last_index(&self) -> u64 {
        self.offset.index + self.entries.len() as u64
    }

    fn compact(&mut self, meta: &SnapshotMeta) {
        if meta.index <= self.offset.index || meta.index > self.last_index() {
            return;
        }
        self.entries.drain(..(meta.index - self.offset.index) as usize);
        self.offset = meta.clone();
    }

    fn apply(&mut self, write: &OwnedWrite) -> Result<()> {
        if let Some(snap) = &write.snapshot {
            self.offset = snap.clone();
            self.entries.clear();
        }
        check_append(&write.entries, self.offset.index + 1, self.last_index())?;
        if let Some(head) = write.entries.first() {
            self.entries.truncate((head.index - self.offset.index - 1) as usize);
            self.entries.extend(write.entries.iter().cloned());
        }
        if let Some(hs) = &write.hard_state {
            self.hard_state = *hs;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct OwnedWrite {
    snapshot: Option<SnapshotMeta>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
}

#[derive(Debug, Default)]
pub struct MemStore {
    durable: State,
    /// Writes issued since the last sync, oldest first.
    unsynced: Vec<OwnedWrite>,
    current: State,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) {
        self.durable = self.current.clone();
        self.unsynced.clear();
    }

    /// How many writes a crash now could lose.
    pub fn unsynced_writes(&self) -> usize {
        self.unsynced.len()
    }

    /// Simulates a power cut: keeps the durable state and the first `survive`
    /// unsynced writes (clamped to how many there are).
    pub fn crash(&mut self, survive: usize) {
        let mut state = self.durable.clone();
        for write in self.unsynced.iter().take(survive) {
            state.apply(write).expect("a write that applied once applies again");
        }
        self.durable = state.clone();
        self.current = state;
        self.unsynced.clear();
    }

    /// The durable hard state: what a crash now would leave.
    pub fn durable_hard_state(&self) -> HardState {
        self.durable.hard_state
    }
}

impl LogStore for MemStore {
    fn bootstrap(&mut self, conf: &ConfState) -> Result<()> {
        if self.current != State::default() {
            return Err(StorageError::InvalidWrite("store already holds Raft state".into()));
        }
        self.current.offset.conf = Some(conf.clone());
        self.sync();
        Ok(())
    }

    fn initial_state(&self) -> Result<InitialState> {
        Ok(InitialState {
            hard_state: self.current.hard_state,
            offset_index: self.current.offset.index,
            offset_term: self.current.offset.term,
            entries: self.current.entries.clone(),
            conf: self.current.offset.conf.clone().unwrap_or_default(),
        })
    }

    fn hard_state(&self) -> Result<HardState> {
        Ok(self.current.hard_state)
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta> {
        Ok(self.current.offset.clone())
    }

    fn first_index(&self) -> u64 {
        self.current.offset.index + 1
    }

    fn last_index(&self) -> u64 {
        self.current.last_index()
    }

    fn term(&self, index: u64) -> Result<u64> {
        if index == self.current.offset.index {
            return Ok(self.current.offset.term);
        }
        Ok(self.entries(index, index)?[0].term)
    }

    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>> {
        let (first, last) = (self.first_index(), self.last_index());
        if lo > hi {
            return Ok(Vec::new());
        }
        if lo < first || hi > last {
            let index = if lo < first { lo } else { hi };
            return Err(StorageError::Unavailable { index, first, last });
        }
        let base = self.current.offset.index + 1;
        Ok(self.current.entries[(lo - base) as usize..=(hi - base) as usize].to_vec())
    }

    fn persist(&mut self, write: LogWrite<'_>) -> Result<()> {
        let owned = OwnedWrite {
            snapshot: write.snapshot.cloned(),
            entries: write.entries.to_vec(),
            hard_state: write.hard_state.copied(),
        };
        self.current.apply(&owned)?;
        self.unsynced.push(owned);
        if write.sync {
            self.sync();
        }
        Ok(())
    }

    fn compact(&mut self, meta: &SnapshotMeta) -> Result<()> {
        if meta.index > self.last_index() {
            return Err(StorageError::InvalidWrite(format!("cannot compact past the last index to {}", meta.index)));
        }
        // Compaction forgets only what a durable snapshot holds, so the
        // model applies it to both views rather than simulating its loss.
        self.current.compact(meta);
        self.durable.compact(meta);
        Ok(())
    }
}
