//! The RocksDB log store: round trip, reopen, detection of a corrupted
//! record, suffix truncation, durable hard state, compaction and snapshot
//! install, and writes refused without changing anything.

use bytes::Bytes;
use raftkv::proto::{ConfState, Entry, HardState, SnapshotMeta};
use raftkv::storage::{LogStore, LogWrite, RocksStore, StorageError};

fn entries(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    (lo..=hi).map(|i| Entry::normal(i, term, Bytes::from(format!("command {i} of term {term}")))).collect()
}

fn append(store: &mut RocksStore, entries: &[Entry], hs: Option<&HardState>) {
    store.persist(LogWrite { entries, hard_state: hs, sync: true, snapshot: None }).unwrap();
}

fn new_store(dir: &tempfile::TempDir) -> RocksStore {
    let mut store = RocksStore::open(dir.path()).unwrap();
    store.bootstrap(&ConfState::with_voters([1, 2, 3])).unwrap();
    store
}

#[test]
fn round_trip_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let written = entries(1, 100, 3);
    let hs = HardState { term: 3, vote: 2, commit: 90 };
    {
        let mut store = new_store(&dir);
        append(&mut store, &written, Some(&hs));
        assert_eq!(store.entries(1, 100).unwrap(), written);
        assert_eq!(store.term(50).unwrap(), 3);
        assert_eq!((store.first_index(), store.last_index()), (1, 100));
    }
    let store = RocksStore::open(dir.path()).unwrap();
    let state = store.initial_state().unwrap();
    assert_eq!(state.entries, written);
    assert_eq!(state.hard_state, hs);
    assert_eq!(state.conf, ConfState::with_voters([1, 2, 3]));
    assert_eq!(store.term(100).unwrap(), 3, "term read from disk after reopen");
    assert!(matches!(store.entries(50, 101), Err(StorageError::Unavailable { index: 101, .. })));
}

#[test]
fn hard_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = new_store(&dir);
        append(&mut store, &[], Some(&HardState { term: 7, vote: 1, commit: 0 }));
        append(&mut store, &[], Some(&HardState { term: 8, vote: 3, commit: 0 }));
    }
    let store = RocksStore::open(dir.path()).unwrap();
    assert_eq!(store.hard_state().unwrap(), HardState { term: 8, vote: 3, commit: 0 });
}

#[test]
fn a_flipped_byte_is_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = new_store(&dir);
        append(&mut store, &entries(1, 100, 1), None);
    }
    // Flip one byte of entry 42's stored record, behind the store's back.
    {
        let db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), ["raft_state", "raft_log", "meta"]).unwrap();
        let cf = db.cf_handle("raft_log").unwrap();
        let key = 42u64.to_be_bytes();
        let mut value = db.get_cf(cf, key).unwrap().unwrap();
        let last = value.len() - 1;
        value[last] ^= 0x01;
        db.put_cf(cf, key, value).unwrap();
    }
    let store = RocksStore::open(dir.path()).unwrap();
    let err = store.entries(1, 100).unwrap_err();
    match &err {
        StorageError::Corruption { cf, key, .. } => {
            assert_eq!(*cf, "raft_log");
            assert_eq!(key, "index 42");
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert!(err.to_string().contains("index 42"), "{err}");
    assert!(store.initial_state().is_err(), "a node must not start from a corrupt log");
    // The entries before it are still served.
    assert_eq!(store.entries(1, 41).unwrap().len(), 41);
}

#[test]
fn conflicting_suffix_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = new_store(&dir);
        append(&mut store, &entries(1, 10, 1), None);
        // A new leader's entries replace 6..=10 with 6..=8.
        append(&mut store, &entries(6, 8, 2), None);
        assert_eq!(store.last_index(), 8);
        assert_eq!(store.term(5).unwrap(), 1);
        assert_eq!(store.term(6).unwrap(), 2);
        assert!(store.entries(9, 9).is_err());
    }
    let store = RocksStore::open(dir.path()).unwrap();
    assert_eq!(store.last_index(), 8, "the truncated suffix stays gone after reopen");
    assert_eq!(store.entries(6, 8).unwrap(), entries(6, 8, 2));
}

#[test]
fn a_write_that_would_leave_a_gap_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = new_store(&dir);
    append(&mut store, &entries(1, 5, 1), None);
    let hs = HardState { term: 9, vote: 9, commit: 0 };
    let err = store
        .persist(LogWrite { entries: &entries(8, 9, 1), hard_state: Some(&hs), sync: true, snapshot: None })
        .unwrap_err();
    assert!(matches!(err, StorageError::InvalidWrite(_)), "{err}");
    assert_eq!(store.last_index(), 5);
    assert_eq!(store.hard_state().unwrap(), HardState::default());
}

#[test]
fn bootstrap_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = new_store(&dir);
    append(&mut store, &entries(1, 1, 1), None);
    assert!(store.bootstrap(&ConfState::with_voters([1])).is_err());
}

#[test]
fn compaction_and_snapshot_install_move_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let conf = Some(ConfState::with_voters([1, 2, 3]));
    {
        let mut store = new_store(&dir);
        append(&mut store, &entries(1, 20, 2), None);
        store.compact(&SnapshotMeta { index: 10, term: 2, conf: conf.clone() }).unwrap();
        assert_eq!(store.first_index(), 11);
        assert_eq!(store.term(10).unwrap(), 2);
        assert!(store.entries(5, 12).is_err());
        // Compacting to a wrong term is refused.
        assert!(store.compact(&SnapshotMeta { index: 15, term: 9, conf: conf.clone() }).is_err());
    }
    let mut store = RocksStore::open(dir.path()).unwrap();
    assert_eq!((store.first_index(), store.last_index()), (11, 20));
    let state = store.initial_state().unwrap();
    assert_eq!((state.offset_index, state.offset_term, state.entries.len()), (10, 2, 10));

    // Installing a snapshot past the log replaces the whole log.
    let snap = SnapshotMeta { index: 50, term: 4, conf };
    store.persist(LogWrite { snapshot: Some(&snap), sync: true, ..LogWrite::default() }).unwrap();
    assert_eq!((store.first_index(), store.last_index()), (51, 50));
    append(&mut store, &entries(51, 52, 4), None);
    drop(store);
    let store = RocksStore::open(dir.path()).unwrap();
    assert_eq!((store.first_index(), store.last_index()), (51, 52));
    assert_eq!(store.term(50).unwrap(), 4);
}
