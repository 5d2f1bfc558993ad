//! The core's view of the log: every entry since the last compaction, in memory.
//!
//! As with etcd's `MemoryStorage`, the uncompacted log lives in memory and the
//! stores only make it durable; snapshots bound its size. Three cursors move
//! through it and keep `applied <= committed` and `applied <= persisted`:
//!
//! - `unstable`: the first index not yet handed to the driver to persist;
//! - `persisted`: every entry up to here is durable on this node;
//! - `committed` / `applied`: known committed / handed to the state machine.
//!
//! Entries are only applied once durable locally, so a restarted node never
//! has applied something its own log lost.

use std::collections::VecDeque;

use crate::proto::{Entry, SnapshotMeta};

use super::ConflictHint;

#[derive(Debug)]
pub struct RaftLog {
    /// Index and term of the entry just before `entries[0]` (the compaction
    /// point; 0/0 for an empty log).
    offset: u64,
    offset_term: u64,
    /// `entries[i].index == offset + 1 + i`.
    entries: VecDeque<Entry>,
    pub(crate) committed: u64,
    pub(crate) applied: u64,
    pub(crate) persisted: u64,
    unstable: u64,
}

impl RaftLog {
    /// A log recovered from storage: the compaction point, the entries after
    /// it (all durable), the durable commit index and the application's
    /// applied index.
    pub fn new(offset: u64, offset_term: u64, entries: Vec<Entry>, committed: u64, applied: u64) -> RaftLog {
        let last = offset + entries.len() as u64;
        RaftLog {
            offset,
            offset_term,
            entries: entries.into(),
            committed,
            applied,
            persisted: last,
            unstable: last + 1,
        }
    }

    pub fn first_index(&self) -> u64 {
        self.offset + 1
    }

    pub fn last_index(&self) -> u64 {
        self.offset + self.entries.len() as u64
    }

    pub fn last_term(&self) -> u64 {
        self.entries.back().map_or(self.offset_term, |e| e.term)
    }

    /// The term of the entry at `index`, if this log still knows it.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.offset {
            return None;
        }
        self.entries.get((index - self.offset - 1) as usize)
    }

    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// Whether a candidate whose log ends at (`last_index`, `last_term`) is at
    /// least as up to date as this log (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries from `lo` on, at least one and at most `max_bytes` of payload.
    pub fn entries_from(&self, lo: u64, max_bytes: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for index in lo.max(self.first_index())..=self.last_index() {
            let entry = self.entry(index).expect("index within the log");
            bytes += entry.data.len() as u64;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Appends entries at the end of the log (the leader's own proposals).
    pub fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.entries.push_back(entry);
    }

    /// Follower side of AppendEntries: if the log holds (`prev_index`,
    /// `prev_term`), keeps the entries that already match, replaces the log
    /// from the first conflicting one, and returns the index of the last entry
    /// the leader sent. Entries at or below `committed` never conflict with a
    /// legitimate leader; if they do, the append is refused.
    pub fn maybe_append(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
    ) -> Result<Option<u64>, String> {
        if !self.match_term(prev_index, prev_term) {
            return Ok(None);
        }
        let last_new = prev_index + entries.len() as u64;
        let conflict = entries.iter().position(|e| !self.match_term(e.index, e.term));
        if let Some(pos) = conflict {
            let first = entries[pos].index;
            if first <= self.committed {
                return Err(format!("append conflicts with committed entry {first} (committed {})", self.committed));
            }
            self.truncate_from(first);
            self.entries.extend(entries.into_iter().skip(pos));
        }
        Ok(Some(last_new))
    }

    /// Drops entries from `index` on; the cursors step back with them.
    fn truncate_from(&mut self, index: u64) {
        let keep = (index - self.offset - 1) as usize;
        self.entries.truncate(keep);
        self.unstable = self.unstable.min(index);
        self.persisted = self.persisted.min(index - 1);
    }

    /// Where this log diverges from a leader's `prev_index`.
    pub fn conflict_hint(&self, prev_index: u64) -> ConflictHint {
        let last = self.last_index();
        if prev_index > last {
            return ConflictHint { term: 0, index: last + 1 };
        }
        let term = self.term(prev_index).unwrap_or(0);
        let mut index = prev_index;
        while index > self.first_index() && self.term(index - 1) == Some(term) {
            index -= 1;
        }
        ConflictHint { term, index }
    }

    /// Leader side of a rejection: the next index to try for a follower that
    /// rejected `rejected` with `hint`. Skips every index that cannot match.
    pub fn next_after_conflict(&self, rejected: u64, hint: ConflictHint) -> u64 {
        if hint.term == 0 {
            return hint.index.min(rejected);
        }
        // The largest index at or below the rejected one whose term is not
        // above the follower's: entries after it cannot match.
        let mut index = rejected.min(self.last_index());
        while index > self.offset && self.term(index).is_some_and(|t| t > hint.term) {
            index -= 1;
        }
        if self.term(index) == Some(hint.term) { index + 1 } else { (index + 1).min(hint.index) }
    }

    pub fn commit_to(&mut self, index: u64) -> bool {
        if index > self.committed {
            self.committed = index.min(self.last_index());
            return true;
        }
        false
    }

    pub fn has_unstable(&self) -> bool {
        self.unstable <= self.last_index()
    }

    /// Hands out the entries not yet given to the driver to persist.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable.max(self.first_index());
        let out: Vec<Entry> = (from..=self.last_index()).map(|i| self.entry(i).unwrap().clone()).collect();
        self.unstable = self.last_index() + 1;
        out
    }

    /// The driver made entries up to (`index`, `term`) durable. If the log
    /// was rewritten there meanwhile, the write no longer speaks for it.
    pub fn persisted_to(&mut self, index: u64, term: u64) {
        if index > self.persisted && self.match_term(index, term) && index < self.unstable {
            self.persisted = index;
        }
    }

    /// The highest index that may be applied: committed and locally durable.
    fn applicable(&self) -> u64 {
        self.committed.min(self.persisted)
    }

    pub fn has_next_committed(&self) -> bool {
        self.applicable() > self.applied
    }

    /// Hands out committed, durable entries not yet applied.
    pub fn take_committed(&mut self) -> Vec<Entry> {
        let hi = self.applicable();
        let out: Vec<Entry> = (self.applied + 1..=hi).filter_map(|i| self.entry(i).cloned()).collect();
        self.applied = self.applied.max(hi);
        out
    }

    /// Replaces the whole log with the point a snapshot covers.
    pub fn restore(&mut self, meta: &SnapshotMeta) {
        self.offset = meta.index;
        self.offset_term = meta.term;
        self.entries.clear();
        self.committed = meta.index;
        self.applied = meta.index;
        self.persisted = meta.index;
        self.unstable = meta.index + 1;
    }

    /// Forgets entries up to `index` (they live in a snapshot now). Never past
    /// what is applied and durable.
    pub fn compact(&mut self, index: u64) -> bool {
        if index <= self.offset || index > self.applied.min(self.persisted) {
            return false;
        }
        let term = self.term(index).expect("compacting within the log");
        let drop = (index - self.offset) as usize;
        self.entries.drain(..drop);
        self.offset = index;
        self.offset_term = term;
        true
    }

    /// Every entry from `lo` to `hi` inclusive that the log holds.
    pub fn slice(&self, lo: u64, hi: u64) -> impl Iterator<Item = &Entry> {
        (lo.max(self.first_index())..=hi.min(self.last_index())).filter_map(|i| self.entry(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ents(terms: &[(u64, u64)]) -> Vec<Entry> {
        terms.iter().map(|&(i, t)| Entry::normal(i, t, Bytes::new())).collect()
    }

    #[test]
    fn append_keeps_matching_entries_and_replaces_conflicts() {
        let mut log = RaftLog::new(0, 0, ents(&[(1, 1), (2, 1), (3, 2)]), 0, 0);
        // A stale, shorter append must not truncate entry 3.
        assert_eq!(log.maybe_append(0, 0, ents(&[(1, 1), (2, 1)])), Ok(Some(2)));
        assert_eq!(log.last_index(), 3);
        // A conflicting one replaces from the conflict on.
        assert_eq!(log.maybe_append(1, 1, ents(&[(2, 3)])), Ok(Some(2)));
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.term(2), Some(3));
        assert_eq!(log.persisted, 1, "a rewritten entry is no longer durable");
        // A gap is refused.
        assert_eq!(log.maybe_append(5, 3, ents(&[(6, 3)])), Ok(None));
    }

    #[test]
    fn conflict_with_committed_entry_is_refused() {
        let mut log = RaftLog::new(0, 0, ents(&[(1, 1), (2, 1)]), 2, 0);
        assert!(log.maybe_append(1, 1, ents(&[(2, 2)])).is_err());
        assert_eq!(log.term(2), Some(1));
    }

    #[test]
    fn conflict_hint_skips_a_whole_term() {
        // Follower: terms 1 1 4 4 4 ; leader: 1 1 5 5 5 5.
        let follower = RaftLog::new(0, 0, ents(&[(1, 1), (2, 1), (3, 4), (4, 4), (5, 4)]), 0, 0);
        let leader = RaftLog::new(0, 0, ents(&[(1, 1), (2, 1), (3, 5), (4, 5), (5, 5), (6, 5)]), 0, 0);
        let hint = follower.conflict_hint(5);
        assert_eq!(hint, ConflictHint { term: 4, index: 3 });
        // The leader has no term 4: retry right at the follower's first term-4 index.
        assert_eq!(leader.next_after_conflict(5, hint), 3);
        // A follower shorter than prev_index says where its log ends.
        assert_eq!(follower.conflict_hint(9), ConflictHint { term: 0, index: 6 });
    }

    #[test]
    fn applies_only_what_is_committed_and_durable() {
        let mut log = RaftLog::new(0, 0, vec![], 0, 0);
        log.append(Entry::normal(1, 1, Bytes::new()));
        log.append(Entry::normal(2, 1, Bytes::new()));
        log.commit_to(2);
        assert!(!log.has_next_committed());
        assert_eq!(log.take_unstable().len(), 2);
        log.persisted_to(1, 1);
        assert_eq!(log.take_committed().len(), 1);
        log.persisted_to(2, 1);
        assert_eq!(log.take_committed()[0].index, 2);
    }
}
