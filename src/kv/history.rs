//! Every revision of every key since the compaction point, as etcd's MVCC
//! keeps them, so a read may ask for the state at any revision still held.
//!
//! - `versions` maps (key, revision) to the key's record as of that revision.
//!   A deletion is a tombstone: a record with `version` 0, which no live key
//!   has (a live key's version counts from 1).
//! - `changes` maps each revision to the records it wrote, in the order
//!   its command wrote them (one per key: a transaction may not touch a key
//!   twice): what compaction walks, so compacting costs in proportion to the
//!   revisions it drops, not to the size of the map, and what a watch reads
//!   without a lookup per event. A record there shares its key and value
//!   bytes with its copy in `versions`.
//! - After a compaction at `c`, each key keeps its newest record below `c`
//!   unless that is a tombstone, and every record from `c` on, with the
//!   revisions' change lists: a read at any revision from `c` on answers
//!   exactly as before the compaction, and a watch may replay from `c` (as in
//!   etcd, where the compaction revision itself can still be watched). Reads
//!   and watches below `c` are refused.
//!
//! Both maps are persistent, so the store's O(1) copy (a transaction's
//! scratch state, a snapshot's cut, a read's view) copies history too.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use imbl::OrdMap;

use super::range::KeyRange;
use crate::proto::mvccpb::KeyValue;

#[derive(Clone, Debug, Default)]
pub struct History {
    versions: OrdMap<(Bytes, i64), KeyValue>,
    /// Per revision, an `Arc` so the map's copy-on-write copies a pointer:
    /// an `imbl::Vector` of records would allocate a 64-record chunk each.
    changes: OrdMap<i64, Arc<Vec<KeyValue>>>,
    /// The oldest revision a read may ask for.
    oldest: i64,
    /// Encoded size of every record in `versions`: what a snapshot holds,
    /// and what the space quota measures.
    bytes: u64,
}

impl History {
    /// An empty history whose reads may start at `oldest`.
    pub fn starting_at(oldest: i64) -> History {
        History { versions: OrdMap::new(), changes: OrdMap::new(), oldest, bytes: 0 }
    }

    /// A history of `records`, which must be in key then revision order
    /// with no (key, revision) twice (see [`sort_records`]), whose reads may
    /// start at `oldest`. The two indexes are built on two threads: a
    /// member installing a large snapshot waits for this.
    pub fn rebuilt(oldest: i64, records: &[KeyValue]) -> History {
        let (versions, changes) = std::thread::scope(|s| {
            let versions = s.spawn(|| {
                records.iter().map(|kv| ((kv.key.clone(), kv.mod_revision), kv.clone())).collect::<OrdMap<_, _>>()
            });
            let changes = changes_of(records);
            (versions.join().expect("building the version index does not panic"), changes)
        });
        let bytes = records.iter().map(record_bytes).sum();
        History { versions, changes, oldest, bytes }
    }

    /// The oldest revision a read may ask for: the compaction point.
    pub fn oldest(&self) -> i64 {
        self.oldest
    }

    /// Records held, tombstones included.
    pub fn record_count(&self) -> usize {
        self.versions.len()
    }

    /// The encoded size of the records held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records `kv` as its key's state at its `mod_revision`.
    pub fn record(&mut self, kv: KeyValue) {
        let revision = kv.mod_revision;
        // Copied only if a clone of the history shares this revision's list,
        // which a command still writing its revision never has.
        // Most revisions write one record: room for exactly one at first.
        let records = self.changes.entry(revision).or_insert_with(|| Arc::new(Vec::with_capacity(1)));
        Arc::make_mut(records).push(kv.clone());
        self.bytes += record_bytes(&kv);
        if let Some(old) = self.versions.insert((kv.key.clone(), revision), kv) {
            self.bytes -= record_bytes(&old);
        }
    }

    /// Records that `key` was deleted at `revision`.
    pub fn record_deletion(&mut self, key: Bytes, revision: i64) {
        self.record(tombstone(key, revision));
    }

    /// Every record, tombstones included, in key then revision order: what
    /// a snapshot holds.
    pub fn records(&self) -> impl Iterator<Item = &KeyValue> {
        self.versions.values()
    }

    /// The live records in `range` as of `revision`, in key order.
    pub fn at<'a>(&'a self, range: &KeyRange, revision: i64) -> impl Iterator<Item = &'a KeyValue> + 'a {
        let (start, end) = match range {
            KeyRange::One(k) => (Bound::Included((k.clone(), i64::MIN)), Bound::Included((k.clone(), i64::MAX))),
            KeyRange::From(k) => (Bound::Included((k.clone(), i64::MIN)), Bound::Unbounded),
            KeyRange::Between(k, e) if k < e => {
                (Bound::Included((k.clone(), i64::MIN)), Bound::Excluded((e.clone(), i64::MIN)))
            }
            KeyRange::Between(k, _) => (Bound::Excluded((k.clone(), i64::MAX)), Bound::Excluded((k.clone(), i64::MAX))),
        };
        let mut scan = self.versions.range((start, end)).filter(move |((_, r), _)| *r <= revision).peekable();
        // Per key, the last record at or below `revision`, if it is live.
        std::iter::from_fn(move || {
            loop {
                let ((key, _), mut newest) = scan.next()?;
                while let Some(((next, _), kv)) = scan.peek() {
                    if next != key {
                        break;
                    }
                    newest = kv;
                    scan.next();
                }
                if newest.version > 0 {
                    return Some(newest);
                }
            }
        })
    }

    /// Forgets what no read at `revision` or later needs, and refuses reads
    /// below it from now on. `revision` must not be below the current oldest.
    pub fn compact(&mut self, revision: i64) {
        let dropped: Vec<i64> = self.changes.range(..revision).map(|(&r, _)| r).collect();
        for r in dropped {
            let records = self.changes.remove(&r).unwrap_or_default();
            for key in records.iter().map(|kv| kv.key.clone()) {
                // Older records of this key: superseded at `r`.
                let older: Vec<(Bytes, i64)> = self
                    .versions
                    .range((Bound::Included((key.clone(), i64::MIN)), Bound::Excluded((key.clone(), r))))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in older {
                    self.forget(&k);
                }
                // A deletion below the compaction point hides nothing a
                // permitted read could see. A live record stays: it is the
                // key's state at `revision`, or the next change of the key
                // (here or in a later compaction) drops it as older.
                let at = (key, r);
                if self.versions.get(&at).is_some_and(|kv| kv.version == 0) {
                    self.forget(&at);
                }
            }
        }
        self.oldest = revision;
    }

    fn forget(&mut self, at: &(Bytes, i64)) {
        if let Some(kv) = self.versions.remove(at) {
            self.bytes -= record_bytes(&kv);
        }
    }
}

/// A change as a watch reports it: the record a revision wrote (a tombstone
/// for a deletion) and, when asked for, the key's live record before it if
/// still held.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    pub kv: &'a KeyValue,
    pub prev: Option<&'a KeyValue>,
}

impl History {
    /// The changes to keys in `range` at the revisions `revisions`, in
    /// revision order and, within a revision, in the order its command made
    /// them; each with the key's record before it when `with_prev` (a
    /// lookup per change, so only when asked). The revisions must not start
    /// below [`History::oldest`].
    pub fn changes_in<'a>(
        &'a self,
        revisions: std::ops::RangeInclusive<i64>,
        range: &'a KeyRange,
        with_prev: bool,
    ) -> impl Iterator<Item = Change<'a>> + 'a {
        self.changes.range(revisions).flat_map(move |(&revision, records)| {
            records.iter().filter(move |kv| range.contains(&kv.key)).map(move |kv| {
                let prev = if with_prev { self.before(&kv.key, revision) } else { None };
                Change { kv, prev }
            })
        })
    }

    /// `key`'s live record just before `revision`, if still held.
    fn before(&self, key: &Bytes, revision: i64) -> Option<&KeyValue> {
        let before = (Bound::Included((key.clone(), i64::MIN)), Bound::Excluded((key.clone(), revision)));
        self.versions.range(before).next_back().map(|(_, p)| p).filter(|p| p.version > 0)
    }
}

/// Puts records in key then revision order, keeping the last of any
/// (key, revision) given twice: the order [`History::rebuilt`] needs. A
/// snapshot's records already are in it, which costs one pass to see.
pub fn sort_records(records: &mut Vec<KeyValue>) {
    let order = |a: &KeyValue, b: &KeyValue| (&a.key, a.mod_revision).cmp(&(&b.key, b.mod_revision));
    if !records.is_sorted_by(|a, b| order(a, b).is_lt()) {
        // Stable: of two equal records the later one given stays later.
        records.sort_by(order);
        records.dedup_by(|later, earlier| {
            let same = order(later, earlier).is_eq();
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
    }
}

/// Each revision's records, in key order within a revision.
fn changes_of(records: &[KeyValue]) -> OrdMap<i64, Arc<Vec<KeyValue>>> {
    let mut by_revision: Vec<(i64, usize)> = records.iter().enumerate().map(|(i, kv)| (kv.mod_revision, i)).collect();
    by_revision.sort_unstable();
    let mut changes = OrdMap::new();
    for group in by_revision.chunk_by(|a, b| a.0 == b.0) {
        let list: Vec<KeyValue> = group.iter().map(|&(_, i)| records[i].clone()).collect();
        changes.insert(group[0].0, Arc::new(list));
    }
    changes
}

fn record_bytes(kv: &KeyValue) -> u64 {
    prost::Message::encoded_len(kv) as u64
}

/// The record of `key`'s deletion at `revision`.
pub fn tombstone(key: Bytes, revision: i64) -> KeyValue {
    KeyValue { key, mod_revision: revision, ..Default::default() }
}
