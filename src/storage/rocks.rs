//! The RocksDB log store.
//!
//! Column families: `raft_state` (the hard state), `raft_log` (big-endian
//! index → entry, so iteration order is log order) and `meta` (the compaction
//! point and the configuration there). Each `persist` is one `WriteBatch`,
//! synced when it carries entries or a vote: the group commit that write
//! throughput comes from. The terms of recent entries are cached so the hot
//! path never reads RocksDB for them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use prost::Message as _;
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};

use super::{LogStore, LogWrite, Result, StorageError, check_append, decode_frame, encode_frame};
use crate::proto::{ConfState, Entry, HardState, Membership, SnapshotMeta};
use crate::raft::InitialState;

const CF_STATE: &str = "raft_state";
const CF_LOG: &str = "raft_log";
const CF_META: &str = "meta";
const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const KEY_IDENTITY: &[u8] = b"identity";
const KEY_BASE_MEMBERS: &[u8] = b"base_members";
const KEY_REMOVED: &[u8] = b"removed";
/// How many recent terms stay cached.
const TERM_CACHE: usize = 16 * 1024;

/// Compacts every column family fully: space of deleted and overwritten
/// records (the compacted log, older hard states) goes back to the disk.
/// It does not keep the database open: once the store is dropped (the
/// member stopped) it has nothing to work on, and RocksDB closes with its
/// store, before the process exits.
#[derive(Clone)]
pub struct Defragmenter(std::sync::Weak<DB>);

impl Defragmenter {
    /// Blocking: a full compaction rewrites the column families' files.
    pub fn run(&self) -> Result<()> {
        let db = self.0.upgrade().ok_or_else(|| StorageError::InvalidWrite("the store is closed".into()))?;
        for name in [CF_STATE, CF_LOG, CF_META] {
            let cf = db.cf_handle(name).expect("column families are created at open");
            db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        db.flush().map_err(rocks("flush after compaction"))
    }
}

pub struct RocksStore {
    /// Shared with [`Defragmenter`], which compacts it off the Raft loop.
    db: std::sync::Arc<DB>,
    path: PathBuf,
    /// Compaction point.
    offset: SnapshotMeta,
    last: u64,
    /// Terms of entries `term_cache_start..term_cache_start + len`.
    term_cache: VecDeque<u64>,
    term_cache_start: u64,
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn rocks(op: impl Into<String>) -> impl FnOnce(rocksdb::Error) -> StorageError {
    let op = op.into();
    move |source| StorageError::Rocks { op, source }
}

impl RocksStore {
    /// Opens (or creates) the store in `path`, verifying the records it needs
    /// to start.
    pub fn open(path: impl AsRef<Path>) -> Result<RocksStore> {
        let path = path.as_ref().to_path_buf();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Flushes and compactions write their files out as they go rather
        // than in one burst at the end, which the log's synced writes would
        // wait behind.
        opts.set_bytes_per_sync(1 << 20);
        let cfs = [CF_STATE, CF_LOG, CF_META].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(rocks(format!("open {}", path.display())))?;
        let mut store = RocksStore {
            db: std::sync::Arc::new(db),
            path,
            offset: SnapshotMeta::default(),
            last: 0,
            term_cache: VecDeque::new(),
            term_cache_start: 1,
        };
        store.offset = store.read_snapshot_meta()?;
        store.last = store.read_last_index()?;
        store.term_cache_start = store.last + 1;
        Ok(store)
    }

    /// The (cluster id, member id) this data directory belongs to, if set.
    pub fn identity(&self) -> Result<Option<(u64, u64)>> {
        let Some(value) = self.db.get_pinned_cf(self.cf(CF_META), KEY_IDENTITY).map_err(rocks("read identity"))? else {
            return Ok(None);
        };
        let corrupt = |reason: String| StorageError::Corruption { cf: CF_META, key: "identity".into(), reason };
        let payload = decode_frame(KEY_IDENTITY, &value).map_err(corrupt)?;
        let ids: [u8; 16] = payload.try_into().map_err(|_| corrupt(format!("{} bytes, expected 16", payload.len())))?;
        let (cluster, member) = ids.split_at(8);
        Ok(Some((u64::from_be_bytes(cluster.try_into().unwrap()), u64::from_be_bytes(member.try_into().unwrap()))))
    }

    /// Records which cluster and member this data directory belongs to.
    pub fn set_identity(&mut self, cluster_id: u64, member_id: u64) -> Result<()> {
        let payload = [cluster_id.to_be_bytes(), member_id.to_be_bytes()].concat();
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), KEY_IDENTITY, encode_frame(KEY_IDENTITY, &payload));
        self.db.write_opt(batch, &opts).map_err(rocks("write identity"))
    }

    /// A handle that compacts the store's column families (etcd's
    /// Defragment), usable from any thread while the store runs.
    pub fn defragmenter(&self) -> Defragmenter {
        Defragmenter(std::sync::Arc::downgrade(&self.db))
    }

    /// The member table this data directory started from (the initial
    /// cluster, or the cluster as a joining member found it); the log and
    /// snapshots take it from there.
    pub fn base_members(&self) -> Result<Option<Membership>> {
        self.get_record(CF_META, KEY_BASE_MEMBERS, "base members")
    }

    pub fn set_base_members(&mut self, table: &Membership) -> Result<()> {
        self.put_synced(KEY_BASE_MEMBERS, &table.encode_to_vec(), "write the base member table")
    }

    /// Whether this member learned it was removed from its cluster: such a
    /// data directory never starts again.
    pub fn is_removed(&self) -> Result<bool> {
        Ok(self.db.get_pinned_cf(self.cf(CF_META), KEY_REMOVED).map_err(rocks("read the removed mark"))?.is_some())
    }

    pub fn mark_removed(&mut self) -> Result<()> {
        self.put_synced(KEY_REMOVED, b"removed", "write the removed mark")
    }

    fn put_synced(&mut self, key: &[u8], payload: &[u8], what: &'static str) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), key, encode_frame(key, payload));
        self.db.write_opt(batch, &opts).map_err(rocks(what))
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column families are created at open")
    }

    fn get_record<T: prost::Message + Default>(&self, cf: &'static str, key: &[u8], what: &str) -> Result<Option<T>> {
        let Some(value) = self.db.get_pinned_cf(self.cf(cf), key).map_err(rocks(format!("read {what}")))? else {
            return Ok(None);
        };
        let corrupt = |reason: String| StorageError::Corruption { cf, key: what.to_string(), reason };
        let payload = decode_frame(key, &value).map_err(corrupt)?;
        T::decode(payload).map(Some).map_err(|e| corrupt(format!("undecodable record: {e}")))
    }

    fn read_snapshot_meta(&self) -> Result<SnapshotMeta> {
        Ok(self.get_record(CF_META, KEY_SNAPSHOT, "snapshot")?.unwrap_or_default())
    }

    fn read_last_index(&self) -> Result<u64> {
        let mut iter = self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::End);
        match iter.next() {
            None => Ok(self.offset.index),
            Some(item) => {
                let (key, _) = item.map_err(rocks("find the last log entry"))?;
                let index = decode_log_key(&key)?;
                Ok(index.max(self.offset.index))
            }
        }
    }

    fn decode_entry(index: u64, value: &[u8]) -> Result<Entry> {
        let corrupt = |reason: String| StorageError::Corruption { cf: CF_LOG, key: format!("index {index}"), reason };
        let payload = decode_frame(&log_key(index), value).map_err(corrupt)?;
        let entry = Entry::decode(payload).map_err(|e| corrupt(format!("undecodable entry: {e}")))?;
        if entry.index != index {
            return Err(corrupt(format!("record holds entry {}", entry.index)));
        }
        Ok(entry)
    }

    fn cache_terms(&mut self, entries: &[Entry]) {
        let Some(head) = entries.first() else { return };
        let end = self.term_cache_start + self.term_cache.len() as u64;
        if head.index < self.term_cache_start || head.index > end {
            self.term_cache.clear();
            self.term_cache_start = head.index;
        } else {
            self.term_cache.truncate((head.index - self.term_cache_start) as usize);
        }
        self.term_cache.extend(entries.iter().map(|e| e.term));
        while self.term_cache.len() > TERM_CACHE {
            self.term_cache.pop_front();
            self.term_cache_start += 1;
        }
    }
}

fn decode_log_key(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StorageError::Corruption {
        cf: CF_LOG,
        key: format!("key {key:02x?}"),
        reason: "log keys are 8 bytes".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

impl LogStore for RocksStore {
    fn bootstrap(&mut self, conf: &ConfState) -> Result<()> {
        if self.last > 0 || self.offset.index > 0 || self.hard_state()? != HardState::default() {
            return Err(StorageError::InvalidWrite(format!("{} already holds Raft state", self.path.display())));
        }
        let meta = SnapshotMeta { index: 0, term: 0, conf: Some(conf.clone()) };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), KEY_SNAPSHOT, encode_frame(KEY_SNAPSHOT, &meta.encode_to_vec()));
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.write_opt(batch, &sync).map_err(rocks("write the initial configuration"))?;
        self.offset = meta;
        Ok(())
    }

    fn initial_state(&self) -> Result<InitialState> {
        let entries = self.entries(self.first_index(), self.last)?;
        Ok(InitialState {
            hard_state: self.hard_state()?,
            offset_index: self.offset.index,
            offset_term: self.offset.term,
            entries,
            conf: self.offset.conf.clone().unwrap_or_default(),
        })
    }

    fn hard_state(&self) -> Result<HardState> {
        Ok(self.get_record(CF_STATE, KEY_HARD_STATE, "hard_state")?.unwrap_or_default())
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta> {
        Ok(self.offset.clone())
    }

    fn first_index(&self) -> u64 {
        self.offset.index + 1
    }

    fn last_index(&self) -> u64 {
        self.last
    }

    fn term(&self, index: u64) -> Result<u64> {
        if index == self.offset.index {
            return Ok(self.offset.term);
        }
        let cached = index.checked_sub(self.term_cache_start).and_then(|i| self.term_cache.get(i as usize));
        if let Some(&term) = cached {
            return Ok(term);
        }
        Ok(self.entries(index, index)?[0].term)
    }

    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>> {
        if lo > hi {
            return Ok(Vec::new());
        }
        let (first, last) = (self.first_index(), self.last);
        if lo < first || hi > last {
            let index = if lo < first { lo } else { hi };
            return Err(StorageError::Unavailable { index, first, last });
        }
        let mut out = Vec::with_capacity((hi - lo + 1) as usize);
        let start = log_key(lo);
        let iter = self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::From(&start, rocksdb::Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(rocks(format!("read log entries {lo}..={hi}")))?;
            let index = decode_log_key(&key)?;
            if index > hi {
                break;
            }
            let expected = lo + out.len() as u64;
            if index != expected {
                return Err(StorageError::Corruption {
                    cf: CF_LOG,
                    key: format!("index {expected}"),
                    reason: format!("entry is missing (next stored is {index})"),
                });
            }
            out.push(Self::decode_entry(index, &value)?);
        }
        if out.len() as u64 != hi - lo + 1 {
            let missing = lo + out.len() as u64;
            return Err(StorageError::Corruption {
                cf: CF_LOG,
                key: format!("index {missing}"),
                reason: "entry is missing at the end of the log".into(),
            });
        }
        Ok(out)
    }

    fn persist(&mut self, write: LogWrite<'_>) -> Result<()> {
        let mut batch = WriteBatch::default();
        let (mut offset, mut last) = (self.offset.clone(), self.last);
        if let Some(snap) = write.snapshot {
            // The core's log restarts empty after the snapshot: so does ours.
            batch.delete_range_cf(self.cf(CF_LOG), log_key(0), log_key(u64::MAX));
            batch.put_cf(self.cf(CF_META), KEY_SNAPSHOT, encode_frame(KEY_SNAPSHOT, &snap.encode_to_vec()));
            offset = snap.clone();
            last = snap.index;
        }
        check_append(write.entries, offset.index + 1, last)?;
        if let (Some(head), Some(tail)) = (write.entries.first(), write.entries.last()) {
            let cf = self.cf(CF_LOG);
            for e in write.entries {
                let key = log_key(e.index);
                batch.put_cf(cf, key, encode_frame(&key, &e.encode_to_vec()));
            }
            if tail.index < last {
                batch.delete_range_cf(cf, log_key(tail.index + 1), log_key(last + 1));
            }
            debug_assert!(head.index <= last + 1);
            last = tail.index;
        }
        if let Some(hs) = write.hard_state {
            batch.put_cf(self.cf(CF_STATE), KEY_HARD_STATE, encode_frame(KEY_HARD_STATE, &hs.encode_to_vec()));
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(write.sync);
        let what = match write.entries.last() {
            Some(e) => format!("write log entries up to {}", e.index),
            None => "write the hard state".to_string(),
        };
        self.db.write_opt(batch, &opts).map_err(rocks(what))?;

        if write.snapshot.is_some() {
            self.term_cache.clear();
            self.term_cache_start = offset.index + 1;
        }
        self.offset = offset;
        self.last = last;
        self.cache_terms(write.entries);
        Ok(())
    }

    fn compact(&mut self, meta: &SnapshotMeta) -> Result<()> {
        if meta.index <= self.offset.index {
            return Ok(());
        }
        if meta.index > self.last {
            return Err(StorageError::InvalidWrite(format!(
                "cannot compact to {} past the last index {}",
                meta.index, self.last
            )));
        }
        let term = self.term(meta.index)?;
        if term != meta.term {
            return Err(StorageError::InvalidWrite(format!(
                "compaction point {} has term {term}, not {}",
                meta.index, meta.term
            )));
        }
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOG), log_key(0), log_key(meta.index + 1));
        batch.put_cf(self.cf(CF_META), KEY_SNAPSHOT, encode_frame(KEY_SNAPSHOT, &meta.encode_to_vec()));
        self.db.write(batch).map_err(rocks(format!("compact the log up to {}", meta.index)))?;
        self.offset = meta.clone();
        Ok(())
    }
}
