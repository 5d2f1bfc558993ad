//! When snapshots are taken, how far the log is then compacted, and which
//! snapshot a restarting member starts from.
//!
//! A snapshot is taken once `every` entries were applied since the newest
//! one, and at least a quarter as many entries as the map holds keys. Every
//! snapshot writes the whole map, so the second rule keeps that to at most
//! [`KEYS_PER_ENTRY`] keys written per applied entry however large the map
//! grows (at 1M keys: a 289 MB file every 250,000 entries, not every 10,000);
//! the log tail a restart replays stays within a quarter of the snapshot it
//! loads. The cut is an O(1) copy of the persistent map, serialized on its own
//! thread while the node keeps applying. Once it is durable the log may drop
//! entries up to the older of (newest − catch-up margin) and the previous
//! snapshot: followers a little behind still catch up from the log, and if
//! the newest file turns out corrupt at restart, the previous one plus the
//! log still rebuild the state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::file;
use super::{Result, SnapshotDir, SnapshotError};
use crate::kv::KvStore;
use crate::proto::SnapshotMeta;
use crate::raft::InitialState;

/// Most keys a snapshot may write per entry applied since the previous one.
pub const KEYS_PER_ENTRY: u64 = 4;

/// A snapshot that became durable.
#[derive(Debug)]
pub struct Taken {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    pub bytes: u64,
    pub records: usize,
    pub took: Duration,
}

pub struct Snapshotter {
    dir: Arc<SnapshotDir>,
    every: u64,
    catchup: u64,
    /// Index of the newest durable snapshot (0: none).
    newest: u64,
    /// Index of the one before it (0: none).
    previous: u64,
    running: bool,
}

impl Snapshotter {
    pub fn new(dir: Arc<SnapshotDir>, every: u64, catchup: u64, newest: u64, previous: u64) -> Snapshotter {
        Snapshotter { dir, every: every.max(1), catchup, newest, previous, running: false }
    }

    pub fn dir(&self) -> &Arc<SnapshotDir> {
        &self.dir
    }

    /// Whether a snapshot should be taken at `applied`, of a map of `keys`.
    pub fn due(&self, applied: u64, keys: usize) -> bool {
        let interval = self.every.max(keys as u64 / KEYS_PER_ENTRY);
        !self.running && applied >= self.newest + interval
    }

    /// Writes `kv` (the map at `meta`) on a background thread and hands the
    /// outcome to `done`, on that thread.
    pub fn start(&mut self, meta: SnapshotMeta, kv: KvStore, done: impl FnOnce(Result<Taken>) + Send + 'static) {
        self.running = true;
        let dir = self.dir.clone();
        let header = kv.snapshot_header(meta.clone());
        let spawned = std::thread::Builder::new().name("snapshot".into()).spawn(move || {
            let started = Instant::now();
            let result = dir.save(&header, kv.records()).map(|(path, bytes)| Taken {
                meta,
                path,
                bytes,
                records: kv.records_len(),
                took: started.elapsed(),
            });
            done(result);
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the snapshot thread: {e}");
            self.running = false;
        }
    }

    /// A snapshot job ended. Returns the index the log may now be compacted
    /// to, if the snapshot is the newest.
    pub fn finished(&mut self, taken: Option<&SnapshotMeta>) -> Option<u64> {
        self.running = false;
        let meta = taken?;
        self.record(meta.index).then(|| self.compaction_point())
    }

    /// A snapshot from the leader was installed: it is the newest now.
    pub fn installed(&mut self, index: u64) {
        self.record(index);
    }

    fn record(&mut self, index: u64) -> bool {
        if index <= self.newest {
            return false;
        }
        self.previous = self.newest;
        self.newest = index;
        true
    }

    fn compaction_point(&self) -> u64 {
        let by_margin = self.newest.saturating_sub(self.catchup);
        if self.previous > 0 { by_margin.min(self.previous) } else { by_margin }
    }

    /// Removes the snapshots older than the two newest, on a thread of its
    /// own: unlinking a file of hundreds of MB can take long enough to stall
    /// the node's loop.
    pub fn prune(&self) {
        let dir = self.dir.clone();
        let keep_from = if self.previous > 0 { self.previous } else { self.newest };
        let spawned = std::thread::Builder::new().name("snapshot-prune".into()).spawn(move || {
            if let Err(e) = dir.remove_older_than(keep_from) {
                tracing::warn!("cannot remove old snapshots: {e}");
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the thread removing old snapshots: {e}");
        }
    }
}

/// What a restart starts from: the newest usable snapshot.
#[derive(Debug)]
pub struct Recovered {
    pub meta: SnapshotMeta,
    pub kv: KvStore,
    pub path: PathBuf,
    /// The index of the next older snapshot file (0: none).
    pub previous: u64,
}

/// Picks the newest snapshot that is intact and that this member's log
/// continues: its index is inside the log (or is the log's start) with the
/// same term. A corrupt file is reported and an older one tried. `None`
/// means the log alone rebuilds everything (it was never compacted).
pub fn recover(dir: &SnapshotDir, state: &InitialState) -> Result<Option<Recovered>> {
    let offset = state.offset_index;
    let term_at = |index: u64| match index.checked_sub(offset + 1) {
        None if index == offset => Some(state.offset_term),
        None => None,
        Some(i) => state.entries.get(i as usize).map(|e| e.term),
    };
    let files = dir.list()?;
    let mut tried = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if term_at(f.index) != Some(f.term) {
            // Older than the log's start, or received but never installed.
            tracing::debug!(file = %f.path.display(), "snapshot is not continued by this member's log");
            continue;
        }
        match file::read(&f.path) {
            Ok(loaded) => {
                let meta = loaded.header.meta.clone().expect("read() checks the header names its point");
                if (meta.index, meta.term) != (f.index, f.term) {
                    tracing::error!(file = %f.path.display(), "snapshot header covers index {} term {}, not what its name says", meta.index, meta.term);
                    tried.push(f.path.display().to_string());
                    continue;
                }
                let previous = files.get(i + 1).map_or(0, |p| p.index);
                let kv = KvStore::from_snapshot(&loaded.header, loaded.records);
                return Ok(Some(Recovered { meta, kv, path: f.path.clone(), previous }));
            }
            Err(e @ SnapshotError::Corrupt { .. }) => {
                tracing::error!("{e}; trying an older snapshot");
                tried.push(f.path.display().to_string());
            }
            Err(e) => return Err(e),
        }
    }
    if offset == 0 {
        return Ok(None);
    }
    let tried = if tried.is_empty() { String::new() } else { format!(" (corrupt: {})", tried.join(", ")) };
    Err(SnapshotError::NoUsableSnapshot { log_start: offset, tried })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Entry;
    use crate::proto::mvccpb::KeyValue;
    use bytes::Bytes;

    fn kv_with(n: usize, revision: i64) -> KvStore {
        KvStore::from_records(
            revision,
            1,
            (0..n).map(|i| KeyValue {
                key: Bytes::from(format!("k{i}")),
                value: Bytes::from("v"),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                lease: 0,
            }),
        )
    }

    fn save(dir: &SnapshotDir, index: u64, term: u64, kv: &KvStore) -> PathBuf {
        let header = kv.snapshot_header(SnapshotMeta { index, term, conf: None });
        dir.save(&header, kv.records()).unwrap().0
    }

    /// A log compacted to `offset` (term 1) holding entries up to `last`, all term 1.
    fn log(offset: u64, last: u64) -> InitialState {
        InitialState {
            offset_index: offset,
            offset_term: 1,
            entries: (offset + 1..=last).map(|i| Entry::normal(i, 1, Bytes::new())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn compaction_keeps_the_margin_and_the_previous_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Snapshotter::new(Arc::new(SnapshotDir::open(tmp.path()).unwrap()), 100, 30, 0, 0);
        assert!(!s.due(99, 50) && s.due(100, 50));
        let at = |i| SnapshotMeta { index: i, term: 1, conf: None };
        assert_eq!(s.finished(Some(&at(100))), Some(70));
        assert_eq!(s.finished(Some(&at(200))), Some(100), "the previous snapshot bounds compaction");
        assert_eq!(s.finished(Some(&at(150))), None, "an older one changes nothing");
        s.installed(1000);
        assert_eq!(s.finished(Some(&at(1100))), Some(1000));
    }

    #[test]
    fn a_large_map_is_snapshotted_less_often() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Snapshotter::new(Arc::new(SnapshotDir::open(tmp.path()).unwrap()), 100, 30, 0, 0);
        assert!(s.due(100, 400), "up to 4 keys per entry: every 100 entries");
        assert!(!s.due(100, 404) && !s.due(100, 1_000_000));
        assert!(!s.due(249_999, 1_000_000) && s.due(250_000, 1_000_000));
        let at = |i| SnapshotMeta { index: i, term: 1, conf: None };
        s.finished(Some(&at(250_000)));
        assert!(!s.due(499_999, 1_000_000) && s.due(500_000, 1_000_000), "counted from the newest snapshot");
        s.running = true;
        assert!(!s.due(10_000_000, 1), "one at a time");
    }

    #[test]
    fn restart_uses_the_newest_intact_snapshot_the_log_continues() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path()).unwrap();
        save(&dir, 100, 1, &kv_with(10, 11));
        let newest = save(&dir, 200, 1, &kv_with(20, 21));
        save(&dir, 900, 1, &kv_with(90, 91)); // received, never installed: past the log
        let r = recover(&dir, &log(100, 300)).unwrap().unwrap();
        assert_eq!((r.meta.index, r.kv.len(), r.kv.revision(), r.previous), (200, 20, 21, 100));

        // Corrupt the newest: the previous one is used, and the error names the file.
        let mut bytes = std::fs::read(&newest).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&newest, bytes).unwrap();
        let r = recover(&dir, &log(100, 300)).unwrap().unwrap();
        assert_eq!(r.meta.index, 100);

        // With the log compacted past every intact snapshot, nothing is usable.
        let err = recover(&dir, &log(150, 300)).unwrap_err();
        assert!(err.to_string().contains("corrupt: ") && err.to_string().contains("after index 150"), "{err}");
        // A log that was never compacted needs no snapshot.
        assert!(recover(&SnapshotDir::open(tmp.path().join("empty")).unwrap(), &log(0, 5)).unwrap().is_none());
    }
}
