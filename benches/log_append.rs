//! Synced append throughput of the RocksDB log store: one `persist` (one
//! fsynced WriteBatch) per batch of 1, 64 or 1024 entries of 256 bytes.
//! Reported twice, as entries/s and as bytes/s.
//!
//! Run: `cargo bench --bench log_append`

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use raftkv::proto::{ConfState, Entry, HardState};
use raftkv::storage::{LogStore, LogWrite, RocksStore};

const ENTRY_BYTES: usize = 256;

fn bench(c: &mut Criterion, group_name: &str, throughput: fn(u64) -> Throughput) {
    let payload = Bytes::from(vec![0xab; ENTRY_BYTES]);
    let mut group = c.benchmark_group(group_name);
    for batch in [1u64, 64, 1024] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        store.bootstrap(&ConfState::with_voters([1])).unwrap();
        let mut next = 1u64;
        group.throughput(throughput(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                let entries: Vec<Entry> = (next..next + batch).map(|i| Entry::normal(i, 1, payload.clone())).collect();
                next += batch;
                let hs = HardState { term: 1, vote: 1, commit: next - 1 };
                let write = LogWrite { entries: &entries, hard_state: Some(&hs), sync: true, snapshot: None };
                store.persist(write).unwrap();
            })
        });
    }
    group.finish();
}

fn log_append(c: &mut Criterion) {
    bench(c, "log_append_entries", Throughput::Elements);
    bench(c, "log_append_bytes", |batch| Throughput::Bytes(batch * ENTRY_BYTES as u64));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = log_append
}
criterion_main!(benches);
