//! `raftkv bench`: a load generator in the manner of etcd's `benchmark` tool.
//!
//! It speaks only the etcd v3 API, so the same command measures raftkv and
//! etcd side by side. `clients` tasks share `conns` gRPC connections (spread
//! over the endpoints, or all to the leader with `--target-leader`, as etcd's
//! tool does) and issue `total` requests between them, one at a time each;
//! every latency is recorded in an HDR histogram. [`watch`] measures
//! watchers: how fast puts reach them, and what they cost the puts. The
//! lease workloads measure a grant followed by a put under the new lease,
//! and keep-alives (each client on a keep-alive stream of its own) over a
//! set of live leases granted first.

pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::client::Channel;

use crate::client::ClientError;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::lease_client::LeaseClient;
use crate::proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest};

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Comma-separated client URLs of the cluster under test (raftkv or etcd).
    #[arg(long, env = "RAFTKV_ENDPOINTS", default_value = crate::client::DEV_ENDPOINTS, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections the clients share.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Bytes per key.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Bytes per value (put).
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Distinct keys: each request picks one at random.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use keys 0, 1, 2, … in order (wrapping at --key-space-size) instead
    /// of random ones, e.g. to load exactly N distinct keys.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Send every request to the leader (found through the Status and MemberList
    /// calls of the first reachable endpoint) instead of spreading the connections
    /// over the endpoints. Like etcd's `benchmark --target-leader`: a write sent to
    /// a follower costs one more hop, so without it the figure for one connection
    /// depends on which member happens to lead.
    #[arg(long)]
    pub target_leader: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Put,
    /// Gets of keys written beforehand; linearizable or serializable.
    Get {
        serializable: bool,
    },
    /// A lease grant (TTL 60 s), then a put under it: one request.
    LeasePut,
    /// Keep-alives over `leases` leases (TTL 60 s) granted beforehand.
    KeepAlive {
        leases: usize,
    },
}

/// The TTL of the leases the lease workloads grant.
const BENCH_LEASE_TTL: i64 = 60;

pub struct Report {
    /// The endpoints the connections went to.
    pub endpoints: Vec<String>,
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Microseconds.
    pub latency: Histogram<u64>,
    pub first_error: Option<String>,
}

impl Report {
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(p / 100.0))
    }

    pub fn print(&self) {
        println!("\nSummary:");
        println!("  Endpoints:    {}", self.endpoints.join(","));
        println!("  Total:        {:.4} secs.", self.elapsed.as_secs_f64());
        println!("  Requests:     {}", self.requests);
        println!("  Errors:       {}", self.errors);
        if let Some(e) = &self.first_error {
            println!("  First error:  {e}");
        }
        println!("  Requests/sec: {:.1}", self.requests_per_sec());
        println!("\nLatency:");
        for p in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
            println!("  p{:<5} {:>10.3} ms", p, self.percentile(p).as_secs_f64() * 1000.0);
        }
        println!("  max    {:>10.3} ms", self.latency.max() as f64 / 1000.0);
    }
}

/// Microseconds from 1 µs to 60 s at 3 significant figures. Fixed bounds:
/// `saturating_record` clamps to them rather than growing the histogram.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn key(i: u64, size: usize) -> Bytes {
    let digits = format!("{i:0size$}").into_bytes();
    Bytes::copy_from_slice(&digits[digits.len().saturating_sub(size)..])
}

/// Connections to the endpoints under test, and those endpoints.
pub(crate) async fn connect(args: &BenchArgs) -> Result<(Vec<Channel>, Vec<String>), ClientError> {
    if args.endpoints.is_empty() || args.conns == 0 || args.clients == 0 {
        return Err(ClientError::BadSettings("--endpoints, --conns and --clients need at least one each".into()));
    }
    let endpoints = if args.target_leader {
        let mut client = crate::client::Client::connect(&args.endpoints).await?;
        match client.leader_endpoint().await {
            Some(url) => vec![url],
            None => {
                return Err(ClientError::Unreachable {
                    endpoints: args.endpoints.join(","),
                    last: "--target-leader: no member names a leader".into(),
                });
            }
        }
    } else {
        args.endpoints.clone()
    };
    let mut channels = Vec::new();
    for i in 0..args.conns {
        channels.push(channel_to(&endpoints[i % endpoints.len()]).await?);
    }
    let used = endpoints.into_iter().take(args.conns).collect();
    Ok((channels, used))
}

/// A connection of its own to `url`.
pub(crate) async fn channel_to(url: &str) -> Result<Channel, ClientError> {
    let target = crate::tls::Target::new(url).map_err(|_| ClientError::BadEndpoint(url.to_string()))?;
    let connection = crate::client::dialer()
        .connect(&target.with(|e| e.tcp_nodelay(true)))
        .await
        .map_err(|e| ClientError::Unreachable { endpoints: url.to_string(), last: e.to_string() })?;
    Ok(Channel::new(connection))
}

/// Runs the workload and reports on it.
pub async fn run(args: &BenchArgs, workload: Workload) -> Result<Report, ClientError> {
    run_stamped(args, workload, None).await
}

/// Runs the workload; with an `epoch`, each put's value starts with the
/// nanoseconds from it to the put's sending (see [`watch::stamp`]).
pub(crate) async fn run_stamped(
    args: &BenchArgs,
    workload: Workload,
    epoch: Option<Instant>,
) -> Result<Report, ClientError> {
    let (channels, endpoints) = connect(args).await?;
    let key_space = args.key_space_size.max(1);
    if let Workload::Get { .. } = workload {
        // The keys a get benchmark reads exist, with values of --val-size.
        let mut kv = KvClient::new(channels[0].clone());
        for i in 0..key_space {
            let req = PutRequest {
                key: key(i, args.key_size),
                value: vec![b'v'; args.val_size].into(),
                ..Default::default()
            };
            kv.put(req).await?;
        }
    }
    let leases = match workload {
        Workload::KeepAlive { leases } => Arc::new(grant_leases(&channels, leases).await?),
        _ => Arc::new(Vec::new()),
    };
    let progress = if args.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(args.total) };
    let issued = Arc::new(AtomicU64::new(0));
    let value: Bytes = vec![b'v'; args.val_size].into();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let channel = channels[c % channels.len()].clone();
        let mut kv = KvClient::new(channel.clone());
        let mut lease = LeaseClient::new(channel);
        let mut keep_alive: Option<KeepAliveStream> = None;
        let leases = leases.clone();
        let (issued, progress, value, total, key_size, sequential) =
            (issued.clone(), progress.clone(), value.clone(), args.total, args.key_size, args.sequential_keys);
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(c as u64);
            let mut latency = new_histogram();
            let (mut errors, mut first_error) = (0u64, None);
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let k = key(if sequential { n % key_space } else { rng.random_range(0..key_space) }, key_size);
                let start = Instant::now();
                let result = match workload {
                    Workload::Put => {
                        let value = match epoch {
                            Some(epoch) => watch::stamp(&value, epoch),
                            None => value.clone(),
                        };
                        kv.put(PutRequest { key: k, value, ..Default::default() }).await.map(drop)
                    }
                    Workload::Get { serializable } => {
                        kv.range(RangeRequest { key: k, serializable, ..Default::default() }).await.map(drop)
                    }
                    Workload::LeasePut => {
                        let granted = lease.lease_grant(LeaseGrantRequest { ttl: BENCH_LEASE_TTL, id: 0 }).await;
                        match granted {
                            Ok(granted) => {
                                let id = granted.into_inner().id;
                                let put = PutRequest { key: k, value: value.clone(), lease: id, ..Default::default() };
                                kv.put(put).await.map(drop)
                            }
                            Err(status) => Err(status),
                        }
                    }
                    Workload::KeepAlive { .. } => {
                        let id = leases[n as usize % leases.len()];
                        keep_alive_once(&mut lease, &mut keep_alive, id).await
                    }
                };
                match result {
                    Ok(()) => latency.saturating_record(start.elapsed().as_micros() as u64),
                    Err(status) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| status.message().to_string());
                    }
                }
                progress.inc(1);
            }
            (latency, errors, first_error)
        }));
    }
    let mut report = Report {
        endpoints,
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: new_histogram(),
        first_error: None,
    };
    for task in tasks {
        let (latency, errors, first_error) = task.await.expect("benchmark client panicked");
        report.latency.add(&latency).expect("histograms of one shape");
        report.errors += errors;
        report.first_error = report.first_error.or(first_error);
    }
    report.elapsed = started.elapsed();
    report.requests = report.latency.len();
    progress.finish_and_clear();
    Ok(report)
}

/// Grants `n` leases over the connections, 64 at a time.
async fn grant_leases(channels: &[Channel], n: usize) -> Result<Vec<i64>, ClientError> {
    let mut ids = Vec::with_capacity(n);
    let mut granting = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut lease = LeaseClient::new(channels[i % channels.len()].clone());
        granting.spawn(async move { lease.lease_grant(LeaseGrantRequest { ttl: BENCH_LEASE_TTL, id: 0 }).await });
        if granting.len() >= 64 || i + 1 == n {
            while let Some(granted) = granting.join_next().await {
                ids.push(granted.expect("a grant task panicked")?.into_inner().id);
            }
        }
    }
    Ok(ids)
}

/// One client's keep-alive stream: requests in, answers out.
struct KeepAliveStream {
    requests: tokio::sync::mpsc::Sender<LeaseKeepAliveRequest>,
    answers: tonic::Streaming<crate::proto::etcdserverpb::LeaseKeepAliveResponse>,
}

/// Renews `id` on the client's stream (opened on first use, and again
/// after an error).
async fn keep_alive_once(
    lease: &mut LeaseClient<Channel>,
    stream: &mut Option<KeepAliveStream>,
    id: i64,
) -> Result<(), tonic::Status> {
    let request = LeaseKeepAliveRequest { id };
    let closed = |_| tonic::Status::unavailable("the keep-alive stream closed");
    let result = async {
        let open = match stream {
            Some(open) => {
                open.requests.send(request).await.map_err(closed)?;
                open
            }
            None => {
                // The first request goes in before the call: a gRPC server
                // may send its response headers only with its first answer
                // (etcd's does).
                let (requests, queue) = tokio::sync::mpsc::channel(1);
                requests.send(request).await.map_err(closed)?;
                let queue = tokio_stream::wrappers::ReceiverStream::new(queue);
                let answers = lease.lease_keep_alive(queue).await?.into_inner();
                stream.insert(KeepAliveStream { requests, answers })
            }
        };
        match open.answers.message().await? {
            Some(answer) if answer.ttl > 0 => Ok(()),
            Some(_) => Err(tonic::Status::not_found("etcdserver: requested lease not found")),
            None => Err(tonic::Status::unavailable("the keep-alive stream ended")),
        }
    }
    .await;
    if result.is_err() {
        *stream = None;
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn slow_requests_are_recorded_as_slow() {
        let mut h = super::new_histogram();
        h.saturating_record(1_000);
        h.saturating_record(250_000);
        assert!(h.max() >= 249_000, "a 250 ms request was clamped to {} µs", h.max());
    }

    #[test]
    fn keys_have_the_requested_size() {
        assert_eq!(super::key(42, 8), "00000042");
        assert_eq!(super::key(123456789, 4), "6789");
    }
}
