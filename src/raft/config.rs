//! Settings of one Raft member.

use super::{NodeId, RaftError};

#[derive(Clone, Debug)]
pub struct Config {
    /// This member's id; never 0.
    pub id: NodeId,
    /// Ticks without hearing from a leader before a follower campaigns. The
    /// actual timeout is drawn at random from `[election_tick, 2 * election_tick)`.
    pub election_tick: u32,
    /// Ticks between a leader's heartbeats. Must be below `election_tick`.
    pub heartbeat_tick: u32,
    /// Campaign with a pre-vote first, so a node that was cut off cannot
    /// disrupt the cluster with a higher term when it returns.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down; followers that heard from a leader recently ignore votes.
    pub check_quorum: bool,
    /// In-flight append messages per follower in the replicate state.
    pub max_inflight: usize,
    /// Upper bound on the payload bytes of one append message (at least one
    /// entry is always sent).
    pub max_msg_bytes: u64,
    /// Seed of the election-timeout randomness: the core is deterministic
    /// given its seed and its inputs.
    pub seed: u64,
}

impl Config {
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            max_inflight: 256,
            max_msg_bytes: 1 << 20,
            seed: id,
        }
    }

    pub fn validate(&self) -> Result<(), RaftError> {
        if self.id == super::NONE {
            return Err(RaftError::Config("id must not be 0".into()));
        }
        if self.heartbeat_tick == 0 {
            return Err(RaftError::Config("heartbeat_tick must be at least 1".into()));
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(RaftError::Config(format!(
                "election_tick ({}) must be greater than heartbeat_tick ({})",
                self.election_tick, self.heartbeat_tick
            )));
        }
        if self.max_inflight == 0 {
            return Err(RaftError::Config("max_inflight must be at least 1".into()));
        }
        Ok(())
    }
}
