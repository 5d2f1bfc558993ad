//! Snapshot throughput and recovery time for 1M keys with 256-byte values:
//! writing a snapshot file (fsynced), loading and verifying one into the
//! map, and the time from starting a member to serving when it holds that
//! snapshot plus a 10,000-entry log tail to replay.
//!
//! Run: `cargo bench --bench snapshot --profile dev`.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use raftkv::kv::{KvStore, put_command};
use raftkv::proto::etcdserverpb::{PutRequest, RangeRequest};
use raftkv::proto::mvccpb::KeyValue;
use raftkv::proto::{ConfState, Entry, HardState, SnapshotHeader, SnapshotMeta};
use raftkv::server;
use raftkv::snapshot::{SnapshotDir, file};
use raftkv::storage::{LogStore, LogWrite, RocksStore};
use tokio::sync::watch;

const KEYS: usize = 1_000_000;
/// The longest log tail a restart replays over a snapshot of `KEYS` keys:
/// the next snapshot is due after a quarter as many entries as keys.
const TAIL: u64 = KEYS as u64 / raftkv::snapshot::snapshotter::KEYS_PER_ENTRY;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key-{i:012}")) // 16 bytes
}

fn map(keys: usize) -> KvStore {
    let value = Bytes::from(vec![b'v'; 256]);
    KvStore::from_records(
        keys as i64 + 1,
        1,
        (0..keys).map(|i| KeyValue {
            key: key(i),
            create_revision: i as i64 + 2,
            mod_revision: i as i64 + 2,
            version: 1,
            value: value.clone(),
            lease: 0,
        }),
    )
}

fn header(index: u64, revision: i64, conf: ConfState) -> SnapshotHeader {
    SnapshotHeader {
        meta: Some(SnapshotMeta { index, term: 1, conf: Some(conf) }),
        revision,
        compact_revision: 1,
        membership: None,
        alarms: Vec::new(),
        leases: Vec::new(),
        auth: None,
    }
}

fn create_and_load(c: &mut Criterion) {
    let kv = map(KEYS);
    let tmp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(tmp.path()).unwrap();
    let hdr = header(KEYS as u64, kv.revision(), ConfState::with_voters([1]));
    let (path, bytes) = dir.save(&hdr, kv.records()).unwrap();
    eprintln!("snapshot of {KEYS} keys: {:.1} MB", bytes as f64 / 1e6);

    let mut group = c.benchmark_group("snapshot_1m_keys");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("create", |b| b.iter(|| dir.save(&hdr, kv.records()).unwrap()));
    group.bench_function("load", |b| {
        b.iter(|| {
            let loaded = file::read(&path).unwrap();
            KvStore::from_snapshot(&loaded.header, loaded.records)
        })
    });
    group.finish();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A one-member data directory holding a 1M-key snapshot at index 1M and
/// 10,000 committed puts after it.
fn prepare_member(settings: &server::Settings) {
    let conf = ConfState::with_voters([settings.member_id]);
    let index = KEYS as u64;
    let kv = map(KEYS);
    let snaps = SnapshotDir::open(settings.data_dir.join("snap")).unwrap();
    let hdr = header(index, kv.revision(), conf.clone());
    snaps.save(&hdr, kv.records()).unwrap();
    std::fs::create_dir_all(settings.data_dir.join("raft")).unwrap();
    let mut store = RocksStore::open(settings.data_dir.join("raft")).unwrap();
    store.bootstrap(&conf).unwrap();
    store.set_identity(settings.cluster_id, settings.member_id).unwrap();
    let entries: Vec<Entry> = (1..=TAIL)
        .map(|i| {
            let req = PutRequest {
                key: key(i as usize * 97 % KEYS),
                value: Bytes::from(vec![b'w'; 256]),
                ..Default::default()
            };
            Entry::normal(index + i, 1, put_command(req).encode_to_vec().into())
        })
        .collect();
    let hard_state = HardState { term: 1, vote: settings.member_id, commit: index + TAIL };
    let meta = hdr.meta.unwrap();
    store
        .persist(LogWrite { snapshot: Some(&meta), entries: &entries, hard_state: Some(&hard_state), sync: true })
        .unwrap();
}

fn startup(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ports = [(free_port(), free_port())];
    let mut settings = server::config::local_cluster(tmp.path(), &ports, "bench-startup", None).unwrap().remove(0);
    // No new snapshot after the replay: every start recovers the same data.
    settings.snapshot_entries = 1 << 40;
    prepare_member(&settings);
    let endpoint = format!("http://127.0.0.1:{}", ports[0].0);
    let last_key = key(TAIL as usize * 97 % KEYS);

    let mut group = c.benchmark_group("startup");
    group.bench_function("snapshot_1m_keys_plus_250k_tail", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (stop, stopped) = watch::channel(false);
                let started = Instant::now();
                let member = runtime.spawn(server::serve(settings.clone(), stopped));
                // Serving: a read sees the last replayed write.
                runtime.block_on(async {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        if let Ok(mut client) = raftkv::client::Client::connect(std::slice::from_ref(&endpoint)).await {
                            let req = RangeRequest { key: last_key.clone(), serializable: true, ..Default::default() };
                            if let Ok(resp) = client.range(req).await
                                && resp.kvs.first().is_some_and(|kv| kv.value[0] == b'w')
                            {
                                return;
                            }
                        }
                        assert!(Instant::now() < deadline, "the member did not serve within 60 s");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
                total += started.elapsed();
                let _ = stop.send(true);
                runtime.block_on(member).unwrap().unwrap();
            }
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(20));
    targets = create_and_load, startup
}
criterion_main!(benches);
