//! etcd's `Lease` API from the client side (`raftkv lease …`), and the
//! [`Keeper`] that keeps a lease alive across member failures.
//!
//! - Grant and revoke are writes: sent once, never retried (a retried grant
//!   could make a second lease; a retried revoke would answer "not found").
//! - Time-to-live, listing and keep-alives are idempotent: retried on the
//!   next endpoint when one is unavailable.
//! - Lease ids are printed and read in hexadecimal, as etcdctl does.

use std::time::Duration;

use super::Channel;
use tokio::sync::watch;

use super::{Client, ClientError};
use crate::proto::etcdserverpb::lease_client::LeaseClient;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

/// The lease operations of `raftkv lease`.
#[derive(clap::Subcommand)]
pub enum LeaseOp {
    /// Grant a lease of TTL seconds; prints its id (hex).
    Grant { ttl: i64 },
    /// End a lease: every key attached to it is deleted.
    Revoke {
        #[arg(value_parser = parse_id)]
        id: i64,
    },
    /// The TTL granted and the time left; with --keys, the keys attached.
    Ttl {
        #[arg(value_parser = parse_id)]
        id: i64,
        #[arg(long)]
        keys: bool,
    },
    /// Every lease granted.
    List,
    /// Keep a lease alive until Ctrl-C (or, with --once, renew it once).
    KeepAlive {
        #[arg(value_parser = parse_id)]
        id: i64,
        #[arg(long)]
        once: bool,
    },
}

/// A lease id as etcdctl takes it: hexadecimal.
pub fn parse_id(s: &str) -> Result<i64, String> {
    i64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| format!("`{s}` is not a lease id (hexadecimal)"))
}

impl Client {
    pub async fn lease_grant(&mut self, ttl: i64) -> Result<LeaseGrantResponse, ClientError> {
        let channel = self.write_channel().await;
        let result = LeaseClient::new(channel).lease_grant(LeaseGrantRequest { ttl, id: 0 }).await;
        self.after_write(result)
    }

    pub async fn lease_revoke(&mut self, id: i64) -> Result<(), ClientError> {
        let channel = self.write_channel().await;
        let result = LeaseClient::new(channel).lease_revoke(LeaseRevokeRequest { id }).await;
        self.after_write(result).map(|_| ())
    }

    pub async fn lease_time_to_live(&mut self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse, ClientError> {
        self.idempotent(|ch| async move {
            Ok(LeaseClient::new(ch).lease_time_to_live(LeaseTimeToLiveRequest { id, keys }).await?.into_inner())
        })
        .await
    }

    pub async fn lease_list(&mut self) -> Result<Vec<i64>, ClientError> {
        self.idempotent(|ch| async move {
            let leases = LeaseClient::new(ch).lease_leases(LeaseLeasesRequest {}).await?.into_inner().leases;
            Ok(leases.into_iter().map(|l| l.id).collect())
        })
        .await
    }

    /// Renews lease `id` once: the TTL it now has (0: it is gone).
    pub async fn lease_keep_alive_once(&mut self, id: i64) -> Result<i64, ClientError> {
        self.idempotent(|ch| async move { keep_alive_once(ch, id).await }).await
    }
}

async fn keep_alive_once(channel: Channel, id: i64) -> Result<i64, tonic::Status> {
    let requests = tokio_stream::once(LeaseKeepAliveRequest { id });
    let mut answers = LeaseClient::new(channel).lease_keep_alive(requests).await?.into_inner();
    match answers.message().await? {
        Some(answer) => Ok(answer.ttl),
        None => Err(tonic::Status::unavailable("the keep-alive stream ended without an answer")),
    }
}

/// Keeps a lease alive in the background, renewing it every third of its
/// TTL through whichever endpoint answers. Its `lost` signal turns true when
/// the lease is gone (expired or revoked) or could not be renewed before it
/// would have expired.
pub struct Keeper {
    pub lost: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Keeper {
    pub fn start(endpoints: &[String], id: i64, ttl: i64) -> Keeper {
        let (lost_tx, lost) = watch::channel(false);
        let endpoints = endpoints.to_vec();
        let task = tokio::spawn(async move {
            let ttl = Duration::from_secs(ttl.max(1) as u64);
            let mut renewed = tokio::time::Instant::now();
            let mut next = 0;
            loop {
                tokio::time::sleep_until(renewed + ttl / 3).await;
                // Every endpoint in turn until one renews, while time is left.
                loop {
                    let url = &endpoints[next % endpoints.len()];
                    let answer = match super::watch::channel(url) {
                        Ok(ch) => tokio::time::timeout(Duration::from_secs(2), keep_alive_once(ch, id)).await,
                        Err(_) => Ok(Err(tonic::Status::invalid_argument("bad endpoint"))),
                    };
                    match answer {
                        Ok(Ok(0)) => {
                            let _ = lost_tx.send(true);
                            return;
                        }
                        Ok(Ok(_)) => {
                            renewed = tokio::time::Instant::now();
                            break;
                        }
                        _ => next += 1,
                    }
                    if renewed.elapsed() >= ttl {
                        let _ = lost_tx.send(true);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Keeper { lost, task }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `raftkv lease …`, printing what etcdctl prints.
pub async fn run(op: LeaseOp, endpoints: &[String]) -> Result<(), ClientError> {
    let mut client = Client::connect(endpoints).await?;
    match op {
        LeaseOp::Grant { ttl } => {
            let granted = client.lease_grant(ttl).await?;
            println!("lease {:016x} granted with TTL({}s)", granted.id, granted.ttl);
        }
        LeaseOp::Revoke { id } => {
            client.lease_revoke(id).await?;
            println!("lease {id:016x} revoked");
        }
        LeaseOp::Ttl { id, keys } => println!("{}", describe(&client.lease_time_to_live(id, keys).await?)),
        LeaseOp::List => {
            let leases = client.lease_list().await?;
            println!("found {} leases", leases.len());
            for id in leases {
                println!("{id:016x}");
            }
        }
        LeaseOp::KeepAlive { id, once } => loop {
            let ttl = client.lease_keep_alive_once(id).await?;
            if ttl <= 0 {
                if once {
                    return Err(ClientError::Server(tonic::Status::not_found("etcdserver: requested lease not found")));
                }
                println!("lease {id:016x} expired or revoked.");
                return Ok(());
            }
            println!("lease {id:016x} keepalived with TTL({ttl})");
            if once {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs((ttl as u64 / 3).max(1))).await;
        },
    }
    Ok(())
}

/// A time-to-live answer as etcdctl prints it.
pub fn describe(resp: &LeaseTimeToLiveResponse) -> String {
    if resp.ttl == -1 {
        return format!("lease {:016x} already expired", resp.id);
    }
    let mut line = format!("lease {:016x} granted with TTL({}s), remaining({}s)", resp.id, resp.granted_ttl, resp.ttl);
    if !resp.keys.is_empty() {
        let keys: Vec<String> = resp.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
        line.push_str(&format!(", attached keys([{}])", keys.join(" ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_read_in_hex_as_etcdctl_prints_them() {
        assert_eq!(parse_id("694d77aa9e38260f"), Ok(0x694d77aa9e38260f));
        assert_eq!(parse_id("1234"), Ok(0x1234));
        assert!(parse_id("xyz").is_err());
    }

    #[test]
    fn time_to_live_prints_etcdctls_lines() {
        let resp = LeaseTimeToLiveResponse {
            id: 0x1234,
            ttl: 4,
            granted_ttl: 5,
            keys: vec!["k1".into(), "k2".into()],
            ..Default::default()
        };
        assert_eq!(
            describe(&resp),
            "lease 0000000000001234 granted with TTL(5s), remaining(4s), attached keys([k1 k2])"
        );
        let gone = LeaseTimeToLiveResponse { id: 0x1234, ttl: -1, ..Default::default() };
        assert_eq!(describe(&gone), "lease 0000000000001234 already expired");
    }
}
