//! raftkv: a replicated, strongly consistent key-value store on its own Raft.
//!
//! - [`raft`]: the consensus core. Pure and deterministic: no I/O, no clock, no threads.
//! - [`storage`]: durability of the core's term, vote and log (RocksDB, and an
//!   in-memory store with a power-cut model for simulation).
//! - [`snapshot`]: snapshot files, when to take them, log compaction, restart.
//! - [`kv`]: the replicated state machine, an ordered map with etcd's revisions.
//! - [`bench`]: the `raftkv bench` load generator (etcd v3 API, so it measures etcd too).
//! - [`client`]: a Rust client of the etcd v3 API with endpoint failover.
//! - [`server`]: one cluster member: driver, peer transport, etcd gRPC and HTTP.
//! - [`shell`]: the `raftkv shell` interactive prompt.
//! - [`proto`]: wire and disk records generated from `proto/` (Raft records,
//!   etcd's v3 API, the command a log entry carries).

pub mod auth;
pub mod bench;
pub mod client;
pub mod kv;
pub mod logging;
pub mod proto;
pub mod raft;
pub mod server;
pub mod shell;
pub mod snapshot;
pub mod storage;
pub mod tls;
