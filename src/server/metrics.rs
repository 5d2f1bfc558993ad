//! Prometheus metrics under etcd's names, served at `GET /metrics` on the
//! client port, so dashboards and alert rules written for etcd read raftkv
//! unchanged. The exposition format is the `prometheus` crate's.
//!
//! - What the node already publishes (leadership, commit and applied
//!   indexes, the store's size and revisions, watchers) is read when the
//!   page is scraped, so the hot paths pay nothing for it.
//! - What happens between scrapes is counted where it happens: leader
//!   changes (a task following the node's status), synced log writes (the
//!   node's loop times each), and failed writes.
//! - One registry per member: `raftkv dev` runs several members in one
//!   process, each with its own page (the `process_*` figures are the
//!   process's, shared).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    exponential_buckets,
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
    /// Synced log writes (etcd's WAL fsync), in seconds.
    pub wal_fsync: Histogram,
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
        self.watch_streams.set(shared.watches.streams() as i64);
        self.watchers.set(shared.watches.watchers() as i64);
        let mut page = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut page) {
            tracing::warn!("could not encode the metrics page: {e}");
        }
        String::from_utf8_lossy(&page).into_owned()
    }
}

/// Counts leader changes as this member sees them (the first leader
/// included, as etcd counts it), until the member stops.
pub async fn count_leader_changes(shared: std::sync::Arc<Shared>) {
    let mut status = shared.status.clone();
    let mut leader = None;
    loop {
        let now = status.borrow_and_update().leader;
        if now.is_some() && now != leader {
            shared.metrics.leader_changes.inc();
        }
        leader = now;
        if status.changed().await.is_err() {
            return;
        }
    }
}
