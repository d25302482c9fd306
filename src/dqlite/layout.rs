//! A k8s-dqlite storage dir at startup and while serving:
//!
//! - `init.yaml` ({Address, Cluster}) on a fresh dir: serve peers on Address, and bootstrap a
//!   new cluster (empty Cluster) or join the cluster at those addresses with the shared
//!   `cluster.crt`/`cluster.key`; the file is removed once the node runs.
//! - `update.yaml` ({Address}): this node's peer address changes; removed once the node runs
//!   (the new address replicates to the other members like any member attribute).
//! - `info.yaml`: where a restarted node finds its peer address; `info.yaml` and
//!   `cluster.yaml` are rewritten while serving, so they always show the current members and
//!   roles (MicroK8s reads them).
//! - `failure-domain` and `tuning.yaml`: read into the settings.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::files::{self, InitConfig, NodeInfo, Tuning, UpdateConfig};
use crate::config::ServeConfig;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::peer::url_to_addr;

/// Files allowed in a storage dir that `init.yaml` initialises (as k8s-dqlite checks).
const EXPECTED_AT_INIT: &[&str] = &[
    files::CLUSTER_CRT,
    files::CLUSTER_KEY,
    files::INIT,
    files::FAILURE_DOMAIN,
    files::TUNING,
];

/// What the storage dir asked of this start.
#[derive(Debug, Default)]
pub struct Prepared {
    /// `init.yaml` named a cluster to join (peer addresses).
    pub join: Option<Vec<String>>,
    /// The one-shot file to remove once the node runs.
    consumed: Option<&'static str>,
}

/// Reads the storage dir's files into `config` (before the store is opened).
pub fn prepare(config: &mut ServeConfig) -> Result<Prepared> {
    let dir = config.storage_dir.clone();
    std::fs::create_dir_all(&dir)?;
    for line in config.dqlite.ignored() {
        tracing::warn!("{line}");
    }
    config.failure_domain = files::failure_domain(&dir)?;
    if let Some(tuning) = files::read::<Tuning>(&dir, files::TUNING)? {
        apply_tuning(config, &tuning);
    }
    let mut prepared = Prepared::default();
    if let Some(init) = files::read::<InitConfig>(&dir, files::INIT)? {
        if init.address.is_empty() {
            return Err(Error::Config("empty address in init.yaml".into()));
        }
        check_fresh(&dir)?;
        tracing::info!(address = %init.address, cluster = ?init.cluster, "initialising the node from init.yaml");
        use_address(config, &init.address);
        if !init.cluster.is_empty() {
            prepared.join = Some(init.cluster);
        }
        prepared.consumed = Some(files::INIT);
    } else if let Some(update) = files::read::<UpdateConfig>(&dir, files::UPDATE)? {
        if update.address.is_empty() {
            return Err(Error::Config("empty address in update.yaml".into()));
        }
        tracing::info!(address = %update.address, "update.yaml: this node's address changes");
        config.peer_listen = Some(format!("tcp://{}", update.address));
        prepared.consumed = Some(files::UPDATE);
    } else if let Some(info) = files::read::<NodeInfo>(&dir, files::INFO)? {
        if !info.address.is_empty() {
            use_address(config, &info.address);
        }
    }
    Ok(prepared)
}

/// Once the node runs: the one-shot file has done its job.
pub fn finish(config: &ServeConfig, prepared: &Prepared) -> Result<()> {
    if let Some(name) = prepared.consumed {
        files::remove(&config.storage_dir, name)?;
    }
    Ok(())
}

/// The peer listener follows the storage dir unless `--peer-listen` says otherwise.
fn use_address(config: &mut ServeConfig, address: &str) {
    if config.peer_listen.is_none() {
        config.peer_listen = Some(format!("tcp://{address}"));
    }
}

/// A node initialised by `init.yaml` must not have data yet (it would start a second history);
/// raftkine's own database may exist if an earlier start stopped before serving.
fn check_fresh(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if EXPECTED_AT_INIT.contains(&name.as_str()) || name == "db" || name.starts_with('.') {
            continue;
        }
        return Err(Error::Config(format!(
            "data directory seems to have existing state '{name}'. please remove the file and restart"
        )));
    }
    Ok(())
}

/// `tuning.yaml` where it has a raftkine meaning: `snapshot.trailing` is how many applied log
/// entries are kept (`--snapshot-count`); `network-latency` (one-way, Go nanoseconds) scales
/// the heartbeat (3x latency, at least the configured one) and the election timeout (10
/// heartbeats). The kine intervals mean nothing here (watches are pushed; kube-apiserver
/// compacts).
fn apply_tuning(config: &mut ServeConfig, tuning: &Tuning) {
    if let Some(snapshot) = &tuning.snapshot {
        if snapshot.trailing > 0 {
            config.snapshot_count = snapshot.trailing;
        }
        tracing::info!(
            threshold = snapshot.threshold,
            trailing = snapshot.trailing,
            "tuning.yaml: applied log entries kept = {}",
            config.snapshot_count
        );
    }
    if let Some(latency_ns) = tuning.network_latency.filter(|n| *n > 0) {
        let heartbeat_ms = (3 * latency_ns / 1_000_000).max(config.heartbeat_interval);
        config.heartbeat_interval = heartbeat_ms;
        config.election_timeout = config.election_timeout.max(10 * heartbeat_ms);
        tracing::info!(
            heartbeat_ms,
            election_ms = config.election_timeout,
            "tuning.yaml: raft timing from network-latency"
        );
    }
    if tuning.kine_compact_interval.is_some() || tuning.kine_poll_interval.is_some() {
        tracing::warn!("tuning.yaml: kine-compact-interval and kine-poll-interval have no meaning for raftkine (watches are pushed; kube-apiserver compacts)");
    }
}

/// This node and every member as dqlite describes them (role 0 voter, 1 standby).
pub fn describe(node: &Node) -> Result<(NodeInfo, Vec<NodeInfo>)> {
    let (mine, others): (Vec<_>, Vec<_>) = node
        .store
        .members()?
        .into_iter()
        .partition(|m| m.id == node.member_id);
    // Not applied yet (a node that just joined): described from its own settings.
    let record = mine
        .into_iter()
        .next()
        .unwrap_or_else(|| node.self_member());
    let me = NodeInfo {
        // This node is where its peer listener is, whatever an older record says.
        address: url_to_addr(&node.config.peer_url()),
        ..NodeInfo::of_member(&record)
    };
    let mut all: Vec<NodeInfo> = others.iter().map(NodeInfo::of_member).collect();
    all.push(me.clone());
    all.sort_by_key(|n| (n.role, n.id));
    Ok((me, all))
}

/// Keeps `info.yaml` and `cluster.yaml` current while the node runs (files are rewritten
/// only when their content changes).
pub fn spawn_state_files(node: &Arc<Node>) {
    let weak: Weak<Node> = Arc::downgrade(node);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Some(node) = weak.upgrade() else { return };
            if let Err(e) = write_state_files(&node) {
                tracing::warn!("writing info.yaml/cluster.yaml: {e}");
            }
        }
    });
}

pub fn write_state_files(node: &Node) -> Result<()> {
    let (me, all) = describe(node)?;
    let dir = &node.config.storage_dir;
    files::write(dir, files::INFO, &me)?;
    files::write(dir, files::CLUSTER, &all)
}
