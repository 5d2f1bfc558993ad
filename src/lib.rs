//! raftkv: a replicated, strongly consistent key-value store on its own Raft.
//!
//! - [`raft`]: the consensus core. Pure and deterministic: no I/O, no clock, no threads.
//! - [`storage`]: durability of the core's term, vote and log (RocksDB, and an
//!   in-memory store with a power-cut model for simulation).
//! - [`proto`]: the durable record types shared by both, generated from `proto/`.

pub mod proto;
pub mod raft;
pub mod storage;
