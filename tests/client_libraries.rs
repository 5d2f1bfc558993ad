//! etcd client libraries of other languages against a real raftkv cluster:
//! Python's `etcd3` and Node's `etcd3`, the two most used. Each script in
//! `tests/clients/` checks every answer itself: `watch.*` puts, reads and
//! watches (a key, a prefix, history from a start revision with previous
//! values, cancel, a compacted start revision), writing through one member
//! and watching on another; `leases.*` grants, renews and revokes leases and
//! runs each library's lock recipe (and Node's election), across members.
//!
//! Needs what `scripts/install-deps` installs: the Python client in
//! `tests/clients/python/.venv` and the Node one in
//! `tests/clients/node/node_modules`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::cluster::Cluster;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs `program args` (bounded: the scripts stop themselves within 90 s)
/// and asserts that it passed, showing what it printed if not.
fn assert_passes(mut command: Command, what: &str, cluster: &Cluster) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: cannot run ({e}); run scripts/install-deps"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.ends_with("all passed\n"),
        "{what} failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        cluster.logs()
    );
    println!("{what}:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_etcd3_puts_gets_and_watches() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(15)).await;
    let hostport = |i: usize| cluster.endpoints()[i].trim_start_matches("http://").to_string();
    let python = clients_dir().join("python/.venv/bin/python");
    let mut command = Command::new(python);
    // Writes through a follower (forwarded), watches on the leader.
    command.arg(clients_dir().join("python/watch.py")).arg(hostport((leader + 1) % 3)).arg(hostport(leader));
    tokio::task::spawn_blocking(move || assert_passes(command, "python etcd3", &cluster)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn node_etcd3_puts_gets_and_watches() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(15)).await;
    let endpoints = cluster.endpoints();
    let mut command = Command::new("node");
    command.current_dir(clients_dir().join("node"));
    // Writes through the leader, watches on a follower.
    command.arg("watch.js").arg(&endpoints[leader]).arg(&endpoints[(leader + 1) % 3]);
    tokio::task::spawn_blocking(move || assert_passes(command, "node etcd3", &cluster)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn python_etcd3_leases_and_locks() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(15)).await;
    let hostport = |i: usize| cluster.endpoints()[i].trim_start_matches("http://").to_string();
    let python = clients_dir().join("python/.venv/bin/python");
    let mut command = Command::new(python);
    // Grants through a follower (forwarded), asks the leader.
    command.arg(clients_dir().join("python/leases.py")).arg(hostport((leader + 1) % 3)).arg(hostport(leader));
    tokio::task::spawn_blocking(move || assert_passes(command, "python etcd3 leases", &cluster)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn node_etcd3_leases_locks_and_elections() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(15)).await;
    let endpoints = cluster.endpoints();
    let mut command = Command::new("node");
    command.current_dir(clients_dir().join("node"));
    command.arg("leases.js").arg(&endpoints[(leader + 1) % 3]).arg(&endpoints[(leader + 2) % 3]);
    tokio::task::spawn_blocking(move || assert_passes(command, "node etcd3 leases", &cluster)).await.unwrap();
}
