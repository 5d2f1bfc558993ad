//! Forwarding writes from a follower to the leader: one long-lived
//! bidirectional stream per peer, carrying many writes at once, each matched
//! to its answer by id. Compared with a call per write, it saves the HTTP/2
//! stream set-up and headers of every forwarded write.
//!
//! A write whose answer is lost with the stream may or may not have been
//! applied: it is failed as such, never sent again.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

use crate::proto::raftkvpb::Command;
use crate::proto::raftpeer::raft_peer_client::RaftPeerClient;
use crate::proto::raftpeer::{ForwardRequest, ForwardResponse};

/// A forwarded write's answer: the response, the revision, the term.
pub type Answer = Result<(crate::proto::etcdserverpb::ResponseOp, i64, u64), ForwardError>;

#[derive(Debug)]
pub enum ForwardError {
    /// Certainly not appended (the peer does not lead, a configuration
    /// change is in flight, the stream could not open): it may be sent again.
    NotAppended,
    /// Failed, or of unknown outcome: the status says which.
    Failed(Status),
}

impl From<Status> for ForwardError {
    fn from(status: Status) -> ForwardError {
        ForwardError::Failed(status)
    }
}

type Job = (Command, oneshot::Sender<Answer>);

/// The sending end of one peer's forwarding stream.
#[derive(Clone)]
pub struct Forwarder {
    jobs: mpsc::Sender<Job>,
}

impl Forwarder {
    pub fn start(cluster_id: u64, me: u64, channel: Channel) -> Forwarder {
        let (jobs, queue) = mpsc::channel(4096);
        tokio::spawn(run(cluster_id, me, RaftPeerClient::new(channel), queue));
        Forwarder { jobs }
    }

    /// Sends a write to the peer and waits for its answer.
    pub async fn forward(&self, command: Command) -> Answer {
        let (reply, answer) = oneshot::channel();
        let stopped = || ForwardError::Failed(Status::unavailable("etcdserver: server stopped"));
        self.jobs.send((command, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn answer(resp: ForwardResponse) -> Answer {
    if resp.not_appended {
        return Err(ForwardError::NotAppended);
    }
    if resp.error_code != 0 {
        return Err(Status::new(tonic::Code::from_i32(resp.error_code), resp.error_message).into());
    }
    let response = resp.response.ok_or_else(|| Status::internal("leader sent an empty answer"))?;
    Ok((response, resp.revision, resp.raft_term))
}

async fn run(cluster_id: u64, me: u64, mut client: RaftPeerClient<Channel>, mut queue: mpsc::Receiver<Job>) {
    let mut next_id = 0u64;
    // Each turn of this loop is one stream; a broken one is replaced when
    // the next write comes.
    while let Some(first) = queue.recv().await {
        let (requests, outgoing) = mpsc::channel(4096);
        let mut pending: HashMap<u64, oneshot::Sender<Answer>> = HashMap::new();
        let mut request = |(command, reply): Job, pending: &mut HashMap<u64, oneshot::Sender<Answer>>| {
            next_id += 1;
            pending.insert(next_id, reply);
            ForwardRequest { cluster_id, from: me, command: Some(command), id: next_id }
        };
        // The channel is new and empty: the first write always fits. Not yet
        // sent: a failure to open the stream is safe to report as "not appended".
        let _ = requests.try_send(request(first, &mut pending));
        let mut incoming = match client.forward(ReceiverStream::new(outgoing)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::debug!("cannot open the forwarding stream: {}", status.message());
                for (_, reply) in pending.drain() {
                    let _ = reply.send(Err(ForwardError::NotAppended));
                }
                continue;
            }
        };
        loop {
            tokio::select! {
                job = queue.recv() => match job {
                    Some(job) => {
                        // A full stream buffer waits (backpressure on the
                        // writers) instead of failing every pending write.
                        // The leader keeps reading requests while its answers
                        // wait for us, so this wait always ends.
                        if requests.send(request(job, &mut pending)).await.is_err() {
                            break;
                        }
                    }
                    None => return,
                },
                resp = incoming.message() => match resp {
                    Ok(Some(resp)) => {
                        if let Some(reply) = pending.remove(&resp.id) {
                            let _ = reply.send(answer(resp));
                        }
                    }
                    _ => break,
                },
            }
        }
        for (_, reply) in pending.drain() {
            let _ = reply.send(Err(ForwardError::Failed(Status::unavailable(
                "etcdserver: request timed out, the connection to the leader was lost; the write may or may not have been applied",
            ))));
        }
    }
}
