//! `raftkv bench watch`: watchers on the whole key space, spread over the
//! endpoints, while clients put; in the manner of etcd's `benchmark
//! watch-latency`, through the etcd v3 API only.
//!
//! Each put's value starts with the nanoseconds from the run's epoch to its
//! sending, so a watcher that receives the event knows its put-to-event
//! latency. The run ends when every watcher has seen every put, or when
//! no event arrived for [`QUIET_LIMIT`] after the last put (the report then
//! says how many events are missing).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use super::{BenchArgs, Report, Workload, channel_to, new_histogram, run_stamped};
use crate::client::ClientError;
use crate::proto::etcdserverpb::watch_client::WatchClient;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_request};

/// How long the watchers may stay silent after the puts before the run
/// gives up on the events still missing.
const QUIET_LIMIT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Clone, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub puts: BenchArgs,
    /// Watchers in all, each over the whole key space.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Watch streams the watchers share (each on a connection of its own,
    /// spread over the endpoints).
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// Once every watcher is created, say so and hold them this many seconds
    /// before the puts start: what idle watchers cost the servers.
    #[arg(long, default_value_t = 0)]
    pub hold_idle: u64,
}

pub struct WatchReport {
    pub puts: Report,
    pub watchers: usize,
    pub events: u64,
    pub expected: u64,
    /// From the first put to the last event received.
    pub elapsed: Duration,
    /// Put-to-event latency, microseconds.
    pub delivery: Histogram<u64>,
}

impl WatchReport {
    pub fn print(&self) {
        self.puts.print();
        let ms = |q: f64| self.delivery.value_at_quantile(q) as f64 / 1000.0;
        println!("\nWatch:");
        println!("  Watchers:     {}", self.watchers);
        println!("  Events:       {} of {}", self.events, self.expected);
        println!("  Events/sec:   {:.1}", self.events as f64 / self.elapsed.as_secs_f64());
        println!("  Put-to-event latency:");
        for p in [50.0, 90.0, 99.0, 99.9] {
            println!("  p{:<5} {:>10.3} ms", p, ms(p / 100.0));
        }
        println!("  max    {:>10.3} ms", self.delivery.max() as f64 / 1000.0);
    }
}

/// `value` with its first 8 bytes replaced by the nanoseconds since `epoch`.
pub fn stamp(value: &Bytes, epoch: Instant) -> Bytes {
    let mut stamped = value.to_vec();
    stamped.resize(stamped.len().max(8), b'v');
    stamped[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
    stamped.into()
}

fn stamped_at(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

pub async fn run(args: &WatchArgs) -> Result<WatchReport, ClientError> {
    let puts = &args.puts;
    if args.streams == 0 || args.watchers < args.streams || puts.endpoints.is_empty() {
        return Err(ClientError::BadSettings(format!(
            "--streams must be at least 1 and --watchers ({}) at least --streams ({}), with an endpoint",
            args.watchers, args.streams
        )));
    }
    let epoch = Instant::now();
    let events = Arc::new(AtomicU64::new(0));
    let (created_tx, mut created) = mpsc::channel(args.streams);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut streams = Vec::new();
    for s in 0..args.streams {
        let channel = channel_to(&puts.endpoints[s % puts.endpoints.len()]).await?;
        let watchers = args.watchers / args.streams + usize::from(s < args.watchers % args.streams);
        let requests = (0..watchers).map(|_| WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                key: vec![0].into(),
                range_end: vec![0].into(),
                ..Default::default()
            })),
        });
        let requests = tokio_stream::StreamExt::chain(tokio_stream::iter(requests), tokio_stream::pending());
        let mut stream =
            WatchClient::new(channel).max_decoding_message_size(i32::MAX as usize).watch(requests).await?.into_inner();
        let (events, created_tx, mut stop) = (events.clone(), created_tx.clone(), stop_rx.clone());
        streams.push(tokio::spawn(async move {
            let mut delivery = new_histogram();
            let mut waiting = watchers;
            let mut last = Instant::now();
            loop {
                let response = tokio::select! {
                    response = stream.message() => match response {
                        Ok(Some(response)) => response,
                        _ => break,
                    },
                    _ = stop.changed() => break,
                };
                if response.created {
                    waiting -= 1;
                    if waiting == 0 {
                        let _ = created_tx.send(()).await;
                    }
                }
                let now = epoch.elapsed().as_nanos() as u64;
                for event in &response.events {
                    if let Some(sent) = event.kv.as_ref().and_then(|kv| stamped_at(&kv.value)) {
                        delivery.saturating_record(now.saturating_sub(sent) / 1000);
                    }
                }
                if !response.events.is_empty() {
                    events.fetch_add(response.events.len() as u64, Ordering::Relaxed);
                    last = Instant::now();
                }
            }
            (delivery, last)
        }));
    }
    drop(created_tx);
    for _ in 0..args.streams {
        created.recv().await.ok_or_else(|| ClientError::Unreachable {
            endpoints: puts.endpoints.join(","),
            last: "a watch stream ended before its watchers were created".into(),
        })?;
    }

    if args.hold_idle > 0 {
        println!(
            "{} watchers created in {:.1} s; idle for {} s",
            args.watchers,
            epoch.elapsed().as_secs_f64(),
            args.hold_idle
        );
        tokio::time::sleep(Duration::from_secs(args.hold_idle)).await;
    }
    let started = Instant::now();
    let report = run_stamped(puts, Workload::Put, Some(epoch)).await?;
    let expected = report.requests * args.watchers as u64;
    let mut seen = events.load(Ordering::Relaxed);
    let mut quiet_since = (Instant::now(), seen);
    while seen < expected && quiet_since.0.elapsed() < QUIET_LIMIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = events.load(Ordering::Relaxed);
        if seen != quiet_since.1 {
            quiet_since = (Instant::now(), seen);
        }
    }
    let mut delivery = new_histogram();
    let mut last_event = started;
    let _ = stop_tx.send(());
    for stream in streams {
        if let Ok((histogram, last)) = stream.await {
            delivery.add(&histogram).expect("histograms of one shape");
            last_event = last_event.max(last);
        }
    }
    Ok(WatchReport {
        puts: report,
        watchers: args.watchers,
        events: seen,
        expected,
        elapsed: last_event.duration_since(started),
        delivery,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stamped_value_keeps_its_size_and_carries_its_time() {
        let epoch = std::time::Instant::now() - std::time::Duration::from_millis(5);
        let stamped = super::stamp(&vec![b'v'; 256].into(), epoch);
        assert_eq!(stamped.len(), 256);
        assert!(super::stamped_at(&stamped).unwrap() >= 5_000_000);
    }
}
