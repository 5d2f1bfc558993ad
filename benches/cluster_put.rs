//! End-to-end put throughput of a 3-member raftkv cluster on loopback:
//! 1, 16 and 256 concurrent clients, 16-byte keys, 256-byte values, every
//! put acknowledged only once committed (synced on a majority) and applied.
//! The members run in this process (as `raftkv dev` runs them).
//!
//! Run: `cargo bench --bench cluster_put --profile dev`.
//! For the side-by-side with etcd, see `scripts/bench-vs-etcd`.

use std::net::TcpListener;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use raftkv::bench::{BenchArgs, Workload};
use raftkv::server;
use tokio::sync::watch;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn cluster_put(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let settings = server::config::local_cluster(dir.path(), &ports, "bench", None).unwrap();
    let endpoints: Vec<String> = ports.iter().map(|(client, _)| format!("http://127.0.0.1:{client}")).collect();
    let (stop, stopped) = watch::channel(false);
    let members: Vec<_> = settings.into_iter().map(|s| runtime.spawn(server::serve(s, stopped.clone()))).collect();
    // Wait for a leader: one put goes through.
    runtime.block_on(async {
        for _ in 0..100 {
            if let Ok(mut client) = raftkv::client::Client::connect(&endpoints).await
                && client.put("ready", "1").await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the benchmark cluster elected no leader");
    });

    let mut group = c.benchmark_group("cluster_put");
    group.throughput(Throughput::Elements(1));
    for clients in [1usize, 16, 256] {
        group.bench_with_input(BenchmarkId::from_parameter(clients), &clients, |b, &clients| {
            b.iter_custom(|iters| {
                let args = BenchArgs {
                    endpoints: endpoints.clone(),
                    clients,
                    conns: clients.min(16),
                    total: iters,
                    key_size: 16,
                    val_size: 256,
                    key_space_size: 100_000,
                    sequential_keys: false,
                    // One client talks to the leader, as in scripts/bench-vs-etcd.
                    target_leader: clients == 1,
                    quiet: true,
                };
                let report = runtime.block_on(raftkv::bench::run(&args, Workload::Put)).expect("cluster reachable");
                assert_eq!(report.errors, 0, "puts failed: {:?}", report.first_error);
                report.elapsed
            })
        });
    }
    group.finish();
    let _ = stop.send(true);
    for member in members {
        runtime.block_on(member).unwrap().unwrap();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(10));
    targets = cluster_put
}
criterion_main!(benches);
