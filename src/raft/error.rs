//! Errors the core reports to its driver. None of them changes Raft state.

use super::NodeId;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RaftError {
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("leadership transfer to {0} in progress")]
    TransferInProgress(NodeId),
    #[error("a configuration change is already pending at index {0}")]
    ConfChangePending(u64),
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(String),
    #[error("invalid config: {0}")]
    Config(String),
    #[error("inconsistent initial state: {0}")]
    InitialState(String),
    #[error("empty proposal: a command must carry data")]
    EmptyProposal,
}
