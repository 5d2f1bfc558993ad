//! Prometheus metrics under etcd's names, served at `GET /metrics` on the
//! client port, so dashboards and alert rules written for etcd read raftkv
//! unchanged. The exposition format is the `prometheus` crate's.
//!
//! - What the node already publishes (leadership, commit and applied
//!   indexes, the store's size and revisions, watchers) is read when the
//!   page is scraped, so the hot paths pay nothing for it.
//! - What happens between scrapes is counted where it happens: leader
//!   changes (where the node logs them), synced log writes and
//!   slow applies (the node's loop times each), snapshots, failed and
//!   forwarded writes, peer send failures, and gRPC calls (a layer on the
//!   client port, [`super::grpc_metrics`]).
//! - One registry per member: `raftkv dev` runs several members in one
//!   process, each with its own page (the `process_*` figures are the
//!   process's, shared).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, exponential_buckets,
};

use super::shared::Shared;

pub struct Metrics {
    registry: Registry,
    has_leader: IntGauge,
    is_leader: IntGauge,
    is_learner: IntGauge,
    pub leader_changes: IntCounter,
    proposals_committed: IntGauge,
    proposals_applied: IntGauge,
    pub proposals_failed: IntCounter,
    /// Proposals made and not yet applied (set by the node each turn).
    pub proposals_pending: IntGauge,
    /// Batches of committed entries whose apply took over 100 ms.
    pub slow_apply: IntCounter,
    /// Synced log writes (etcd's WAL fsync), in seconds.
    pub wal_fsync: Histogram,
    /// The same writes as etcd's backend commit: raftkv's one durable
    /// commit is the synced log write (the map is rebuilt from it).
    pub backend_commit: Histogram,
    /// Messages to a peer that could not be sent, by peer (etcd's `To`).
    pub peer_sent_failures: IntCounterVec,
    /// Each link's probe round trips, by peer (etcd's prober).
    pub peer_round_trip: HistogramVec,
    /// gRPC calls started and finished on the client port, with
    /// go-grpc-prometheus's labels (see [`super::grpc_metrics`]).
    pub grpc_started: IntCounterVec,
    pub grpc_handled: IntCounterVec,
    /// How long each call took, from its request to its status.
    pub grpc_handling: HistogramVec,
    pub snapshot_duration: Histogram,
    pub snapshot_size: IntGauge,
    pub snapshots_sent: IntCounter,
    pub snapshots_received: IntCounter,
    pub log_entries: IntGauge,
    /// On the leader: each follower's distance behind its last index.
    pub follower_lag: IntGaugeVec,
    pub read_index_batch: Histogram,
    pub forwarded_writes: IntCounter,
    /// Reads served by this member (every read path goes through one place).
    pub reads: IntCounter,
    quota_backend_bytes: IntGauge,
    db_total_size: IntGauge,
    keys_total: IntGauge,
    current_revision: IntGauge,
    compact_revision: IntGauge,
    watch_streams: IntGauge,
    watchers: IntGauge,
    leases: IntGauge,
}

impl Metrics {
    pub fn new(member_id: u64) -> Metrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("a valid metric name");
            registry.register(Box::new(g.clone())).expect("each name registered once");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("a valid metric name");
            registry.register(Box::new(c.clone())).expect("each name registered once");
            c
        };
        // etcd's buckets for its disk histograms: 1 ms to about 8 s.
        let buckets = exponential_buckets(0.001, 2.0, 14).expect("valid buckets");
        let wal_fsync = Histogram::with_opts(
            HistogramOpts::new(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of the synced log writes (etcd's WAL fsync).",
            )
            .buckets(buckets),
        )
        .expect("a valid histogram");
        registry.register(Box::new(wal_fsync.clone())).expect("registered once");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("a valid histogram");
            registry.register(Box::new(h.clone())).expect("each name registered once");
            h
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry.register(Box::new(c.clone())).expect("each name registered once");
            c
        };
        let backend_commit = histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commits to the store: raftkv's synced log writes (the log is its backend).",
            exponential_buckets(0.001, 2.0, 14).expect("valid buckets"),
        );
        let snapshot_duration = histogram(
            "raftkv_snapshot_duration_seconds",
            "How long writing a snapshot file of the applied state took.",
            exponential_buckets(0.01, 2.0, 14).expect("valid buckets"),
        );
        let read_index_batch = histogram(
            "raftkv_read_index_batch_size",
            "Linearizable reads served by one ReadIndex round.",
            exponential_buckets(1.0, 2.0, 14).expect("valid buckets"),
        );
        let peer_sent_failures = counters(
            "etcd_network_peer_sent_failures_total",
            "The total number of send failures to a peer (connections refused or streams broken).",
            &["To"],
        );
        let peer_round_trip = HistogramVec::new(
            HistogramOpts::new(
                "etcd_network_peer_round_trip_time_seconds",
                "Round-Trip-Time histogram between peers (a probe every few seconds on each link).",
            )
            // etcd's buckets: 0.1 ms to about 3.3 s.
            .buckets(exponential_buckets(0.0001, 2.0, 16).expect("valid buckets")),
            &["To"],
        )
        .expect("a valid metric");
        registry.register(Box::new(peer_round_trip.clone())).expect("registered once");
        let grpc_started = counters(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            &["grpc_type", "grpc_service", "grpc_method"],
        );
        let grpc_handled = counters(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        );
        let grpc_handling = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            ),
            &["grpc_type", "grpc_service", "grpc_method"],
        )
        .expect("a valid metric");
        registry.register(Box::new(grpc_handling.clone())).expect("registered once");
        let follower_lag = IntGaugeVec::new(
            Opts::new(
                "raftkv_follower_lag_entries",
                "On the leader: entries each follower is behind the leader's log.",
            ),
            &["follower"],
        )
        .expect("a valid metric");
        registry.register(Box::new(follower_lag.clone())).expect("registered once");
        let server_id = IntGaugeVec::new(
            Opts::new("etcd_server_id", "Server or member ID in hexadecimal format. 1 for 'server_id' label."),
            &["server_id"],
        )
        .expect("a valid metric");
        registry.register(Box::new(server_id.clone())).expect("registered once");
        server_id.with_label_values(&[&format!("{member_id:x}")]).set(1);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("registered once");
        Metrics {
            has_leader: gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not."),
            is_leader: gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise."),
            is_learner: gauge(
                "etcd_server_is_learner",
                "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            ),
            leader_changes: counter("etcd_server_leader_changes_seen_total", "The number of leader changes seen."),
            proposals_committed: gauge(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed (the commit index).",
            ),
            proposals_applied: gauge(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied (the applied index).",
            ),
            proposals_failed: counter(
                "etcd_server_proposals_failed_total",
                "The total number of writes that failed for want of a leader or timed out.",
            ),
            db_total_size: gauge(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the stored records (the history since the compaction point), in bytes.",
            ),
            keys_total: gauge("etcd_debugging_mvcc_keys_total", "Total number of keys."),
            current_revision: gauge("etcd_debugging_mvcc_current_revision", "The current revision of the store."),
            compact_revision: gauge("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction."),
            watch_streams: gauge("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams."),
            watchers: gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers."),
            leases: gauge("raftkv_leases", "Leases granted and not yet revoked or expired."),
            proposals_pending: gauge(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            slow_apply: counter(
                "etcd_server_slow_apply_total",
                "The total number of slow apply requests (over 100 ms).",
            ),
            snapshot_size: gauge(
                "raftkv_snapshot_size_bytes",
                "The size of the newest snapshot file written, in bytes.",
            ),
            snapshots_sent: counter("raftkv_snapshots_sent_total", "Snapshots sent to followers in full."),
            snapshots_received: counter(
                "raftkv_snapshots_received_total",
                "Leader's snapshots installed by this member.",
            ),
            log_entries: gauge("raftkv_log_entries", "Entries the Raft log holds (since its compaction point)."),
            forwarded_writes: counter("raftkv_forwarded_writes_total", "Writes this follower forwarded to the leader."),
            reads: counter("raftkv_reads_total", "Reads (ranges) served by this member."),
            quota_backend_bytes: gauge(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes (0: no quota).",
            ),
            backend_commit,
            peer_sent_failures,
            peer_round_trip,
            grpc_started,
            grpc_handled,
            grpc_handling,
            snapshot_duration,
            follower_lag,
            read_index_batch,
            wal_fsync,
            registry,
        }
    }

    /// The page at `/metrics`: what the member publishes now, and what was
    /// counted since it started, in Prometheus's text format.
    pub fn render(&self, shared: &Shared) -> String {
        let status = shared.status.borrow().clone();
        let me = shared.settings.member_id;
        self.has_leader.set(i64::from(status.leader.is_some()));
        self.is_leader.set(i64::from(status.leader == Some(me)));
        self.is_learner.set(i64::from(status.is_learner));
        self.proposals_committed.set(status.commit as i64);
        self.proposals_applied.set(status.applied as i64);
        {
            let kv = shared.applied.borrow();
            self.db_total_size.set(kv.data_bytes() as i64);
            self.keys_total.set(kv.len() as i64);
            self.current_revision.set(kv.revision());
            self.compact_revision.set(kv.compact_revision());
            self.leases.set(kv.leases().len() as i64);
        }
        self.quota_backend_bytes.set(shared.settings.quota_bytes.unwrap_or(0) as i64);
        self.watch_streams.set(shared.watches.streams() as i64);
        self.watchers.set(shared.watches.watchers() as i64);
        let mut page = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut page) {
            tracing::warn!("could not encode the metrics page: {e}");
        }
        String::from_utf8_lossy(&page).into_owned()
    }
}

/// Keeps the recent leader changes this member sees for the cluster page,
/// until the member stops. (The node counts them, the first leader
/// included as etcd counts it, where it logs them.)
pub async fn record_leader_changes(shared: std::sync::Arc<Shared>) {
    let mut status = shared.status.clone();
    let mut leader = None;
    loop {
        let (now, term) = {
            let s = status.borrow_and_update();
            (s.leader, s.term)
        };
        if let Some(new) = now.filter(|_| now != leader) {
            shared.ui.leader_changed(new, term);
        }
        leader = now;
        if status.changed().await.is_err() {
            return;
        }
    }
}
