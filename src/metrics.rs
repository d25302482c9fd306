//! Prometheus metrics of a member, named as etcd names them where the meaning matches (so etcd's
//! dashboards and alerts carry over), plus raftkine's own under `raftkine_`.
//!
//! The metrics live in one process-wide registry ([`metrics`]), as etcd's do: a process runs one
//! member. Hot paths only touch atomics (counters, gauges, histogram buckets); values that are
//! costly to compute (sizes on disk) are read when `/metrics` is scraped ([`Metrics::refresh`]).
//! The HTTP listener that serves them is in `crate::http`, the gRPC counters are filled by the
//! tower layer in `crate::grpc_metrics`.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::error::{Error, Result};
use crate::node::Node;

/// Every metric raftkine exports.
pub struct Metrics {
    registry: Registry,
    /// etcd_server_has_leader: 1 while a leader is known.
    pub has_leader: IntGauge,
    /// etcd_server_is_leader: 1 while this member leads.
    pub is_leader: IntGauge,
    /// etcd_server_leader_changes_seen_total.
    pub leader_changes: IntCounter,
    /// etcd_server_proposals_committed_total (a gauge in etcd too: the commit index).
    pub proposals_committed: IntGauge,
    /// etcd_server_proposals_applied_total (a gauge in etcd too: the applied index).
    pub proposals_applied: IntGauge,
    /// etcd_server_proposals_pending: proposals of this member waiting to be applied.
    pub proposals_pending: IntGauge,
    /// etcd_server_proposals_failed_total.
    pub proposals_failed: IntCounter,
    /// etcd_server_quota_backend_bytes.
    pub quota_backend_bytes: IntGauge,
    /// etcd_mvcc_db_total_size_in_bytes.
    pub db_total_size: IntGauge,
    /// etcd_mvcc_db_total_size_in_use_in_bytes.
    pub db_in_use_size: IntGauge,
    /// etcd_debugging_mvcc_keys_total: live keys.
    pub keys_total: IntGauge,
    /// etcd_disk_wal_fsync_duration_seconds: persisting + flushing the raft log of one Ready.
    pub wal_fsync: Histogram,
    /// etcd_disk_backend_commit_duration_seconds: writing one apply batch to the table.
    pub backend_commit: Histogram,
    /// etcd_network_peer_round_trip_time_seconds{To}: raft heartbeat to its response.
    pub peer_round_trip: HistogramVec,
    /// grpc_server_started_total{grpc_type,grpc_service,grpc_method}.
    pub grpc_started: IntCounterVec,
    /// grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}.
    pub grpc_handled: IntCounterVec,
    /// raftkine_watchers: watchers of all watch streams.
    pub watchers: IntGauge,
    /// raftkine_watch_streams: open watch streams.
    pub watch_streams: IntGauge,
    /// raftkine_watch_lag_revisions: applied revisions not yet delivered, seen by a watch stream
    /// each time it delivers a revision.
    pub watch_lag: Histogram,
    /// raftkine_watch_catch_ups_total: streams that fell behind the hub and read the table.
    pub watch_catch_ups: IntCounter,
    /// raftkine_apply_duration_seconds: applying the committed entries of one Ready.
    pub apply_duration: Histogram,
    /// raftkine_sled_size_bytes: sled's files on disk.
    pub sled_size: IntGauge,
    /// raftkine_storage_available_bytes: free space of the storage dir's filesystem (the disk
    /// guard's last probe).
    pub storage_available: IntGauge,
    /// raftkine_alarms_active: alarms raised in the cluster.
    pub alarms_active: IntGauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    // The definitions are constants: failing here is a programming error caught by the unit
    // test below, never something a client or the disk can cause.
    Metrics::new().unwrap_or_else(|e| panic!("metric definitions: {e}"))
});

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Result<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    fn new() -> Result<Metrics> {
        let r = Registry::new();
        // etcd's buckets: 1 ms .. 8 s for disk latencies, 0.1 ms .. 3.2 s for peer round trips.
        let disk = || exponential_buckets(0.001, 2.0, 14);
        let grpc_labels = ["grpc_type", "grpc_service", "grpc_method"];
        let grpc_started = IntCounterVec::new(
            Opts::new(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
            ),
            &grpc_labels,
        )?;
        r.register(Box::new(grpc_started.clone()))?;
        let grpc_handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
            ),
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )?;
        r.register(Box::new(grpc_handled.clone()))?;
        let peer_round_trip = HistogramVec::new(
            HistogramOpts::new(
                "etcd_network_peer_round_trip_time_seconds",
                "Round-Trip-Time histogram between peers (raft heartbeat to its response).",
            )
            .buckets(exponential_buckets(0.0001, 2.0, 16)?),
            &["To"],
        )?;
        r.register(Box::new(peer_round_trip.clone()))?;
        let mut lag_buckets = vec![0.0];
        lag_buckets.extend(exponential_buckets(1.0, 2.0, 14)?);
        let metrics = Metrics {
            has_leader: gauge(
                &r,
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            )?,
            is_leader: gauge(
                &r,
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            )?,
            leader_changes: counter(
                &r,
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            )?,
            proposals_committed: gauge(
                &r,
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            )?,
            proposals_applied: gauge(
                &r,
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            )?,
            proposals_pending: gauge(
                &r,
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            )?,
            proposals_failed: counter(
                &r,
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            )?,
            quota_backend_bytes: gauge(
                &r,
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            )?,
            db_total_size: gauge(
                &r,
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            )?,
            db_in_use_size: gauge(
                &r,
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            )?,
            keys_total: gauge(
                &r,
                "etcd_debugging_mvcc_keys_total",
                "Total number of keys.",
            )?,
            wal_fsync: histogram(
                &r,
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of persisting and flushing the raft log (one Ready).",
                disk()?,
            )?,
            backend_commit: histogram(
                &r,
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend (one apply batch).",
                disk()?,
            )?,
            peer_round_trip,
            grpc_started,
            grpc_handled,
            watchers: gauge(&r, "raftkine_watchers", "Watchers of all watch streams.")?,
            watch_streams: gauge(&r, "raftkine_watch_streams", "Open watch streams.")?,
            watch_lag: histogram(
                &r,
                "raftkine_watch_lag_revisions",
                "Applied revisions a watch stream had not yet delivered when delivering one.",
                lag_buckets,
            )?,
            watch_catch_ups: counter(
                &r,
                "raftkine_watch_catch_ups_total",
                "Times a watch stream fell behind the live feed and caught up from the table.",
            )?,
            apply_duration: histogram(
                &r,
                "raftkine_apply_duration_seconds",
                "Time to apply the committed entries of one raft Ready.",
                disk()?,
            )?,
            sled_size: gauge(
                &r,
                "raftkine_sled_size_bytes",
                "Size of sled's files on disk (table and raft log).",
            )?,
            storage_available: gauge(
                &r,
                "raftkine_storage_available_bytes",
                "Free space of the storage dir's filesystem at the disk guard's last check.",
            )?,
            alarms_active: gauge(
                &r,
                "raftkine_alarms_active",
                "Alarms raised in the cluster.",
            )?,
            registry: r,
        };
        #[cfg(target_os = "linux")]
        metrics.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(metrics)
    }

    /// Reads the values that are only worth computing when scraped.
    pub fn refresh(&self, node: &Node) {
        let status = node.raft_status();
        let leader = status.leader();
        self.has_leader.set(i64::from(leader != 0));
        self.is_leader.set(i64::from(status.is_leader()));
        let size = node.store.size_on_disk() as i64;
        self.db_total_size.set(size);
        // sled reclaims space by itself: what it holds on disk is what is in use.
        self.db_in_use_size.set(size);
        self.sled_size.set(size);
        self.quota_backend_bytes
            .set(node.config.quota_backend_bytes.min(i64::MAX as u64) as i64);
        if let Ok(alarms) = node.store.alarms() {
            self.alarms_active.set(alarms.len() as i64);
        }
        self.watch_streams.set(node.hub.streams() as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String> {
        let mut out = vec![];
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| Error::Config(format!("metrics text: {e}")))
    }
}

/// Seconds of a duration, as histograms take them.
pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_register_and_encode() {
        let m = metrics();
        m.leader_changes.inc();
        m.grpc_started
            .with_label_values(&["unary", "etcdserverpb.KV", "Range"])
            .inc();
        m.peer_round_trip.with_label_values(&["2a"]).observe(0.001);
        let text = m.encode().unwrap_or_default();
        for name in [
            "etcd_server_has_leader",
            "etcd_server_leader_changes_seen_total",
            "etcd_disk_wal_fsync_duration_seconds_bucket",
            "etcd_network_peer_round_trip_time_seconds_bucket{To=\"2a\"",
            "grpc_server_started_total{grpc_method=\"Range\"",
            "raftkine_watch_lag_revisions_bucket",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
