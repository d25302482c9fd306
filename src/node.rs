//! One raftkine member: opens the store, starts raft, the watch hub and the lessor, and offers the
//! API layer the few operations it needs (propose, linearizable read barrier, headers, status).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::command::Op;
use crate::config::ServeConfig;
use crate::error::{Error, Result};
use crate::lease::Lessor;
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmType, LeaseRevokeRequest, ResponseHeader,
};
use crate::raft::{RaftHandle, RaftOptions, RaftStatus};
use crate::store::{Applied, Store};
use crate::watch::WatchHub;

/// Buffered revisions per watch stream before a slow stream must catch up from the table.
const WATCH_BUFFER: usize = 1024;

/// A running member.
pub struct Node {
    pub config: ServeConfig,
    pub store: Arc<Store>,
    pub hub: Arc<WatchHub>,
    pub lessor: Arc<Lessor>,
    raft: RaftHandle,
    pub cluster_id: u64,
    pub member_id: u64,
    /// The NOSPACE alarm is active: writes other than deletes are refused.
    no_space: AtomicBool,
}

impl Node {
    /// Opens the data dir and starts raft. Must be called inside a tokio runtime (it spawns the
    /// lease-expiry and space-monitor tasks).
    pub fn start(config: ServeConfig) -> Result<Arc<Node>> {
        let store = Arc::new(Store::open(&config.storage_dir)?);
        let (cluster_id, member_id) = load_identity(store.db())?;
        let hub = Arc::new(WatchHub::new(store.revision(), WATCH_BUFFER));
        let lessor = Arc::new(Lessor::new());
        lessor.restore(&store.leases()?);
        let tick = Duration::from_millis(config.heartbeat_interval.max(1));
        let election_ticks = (config.election_timeout / config.heartbeat_interval.max(1)).max(2);
        let raft = RaftHandle::start(
            RaftOptions {
                id: member_id,
                initial_voters: vec![member_id],
                tick,
                election_ticks: election_ticks as usize,
                max_request_bytes: config.max_request_bytes,
                log_retention: 10_000,
            },
            store.clone(),
            hub.clone(),
            lessor.clone(),
        )?;
        let node = Arc::new(Node {
            config,
            store,
            hub,
            lessor,
            raft,
            cluster_id,
            member_id,
            no_space: AtomicBool::new(false),
        });
        node.refresh_alarms();
        tokio::spawn(expire_leases(Arc::downgrade(&node)));
        tokio::spawn(monitor_space(Arc::downgrade(&node)));
        Ok(node)
    }

    /// Proposes a mutation and waits for its answer, within the request timeout.
    pub async fn propose(&self, op: Op) -> Result<Applied> {
        match tokio::time::timeout(self.config.request_timeout, self.raft.propose(op)).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Returns once this member has applied everything committed before the call (ReadIndex).
    pub async fn read_barrier(&self) -> Result<()> {
        match tokio::time::timeout(self.config.request_timeout, self.raft.read_index()).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::Timeout),
        }
    }

    pub fn raft_status(&self) -> &RaftStatus {
        &self.raft.status
    }

    /// A response header as etcd fills it.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft.status.term(),
        }
    }

    /// Completes a header that carries only the revision (as the store produces them).
    pub fn fill_header(&self, header: &mut Option<ResponseHeader>) {
        let revision = header
            .as_ref()
            .map_or_else(|| self.store.revision(), |h| h.revision);
        *header = Some(self.header(revision));
    }

    /// Refuses writes while the NOSPACE alarm is active.
    pub fn check_space(&self) -> Result<()> {
        if self.no_space.load(Ordering::Acquire) {
            return Err(Error::NoSpace);
        }
        Ok(())
    }

    /// Re-reads the alarms from the table.
    pub fn refresh_alarms(&self) {
        let active = self
            .store
            .alarms()
            .map(|a| a.iter().any(|(_, kind)| *kind == AlarmType::Nospace as i32))
            .unwrap_or(false);
        self.no_space.store(active, Ordering::Release);
    }

    /// Stops raft (pending requests fail with `Stopped`) and flushes the store.
    pub fn shutdown(&self) {
        self.raft.status.stopped.store(true, Ordering::Release);
        let _ = self.store.flush();
    }
}

/// Cluster id and member id, made at first start and kept in the data dir.
fn load_identity(db: &sled::Db) -> Result<(u64, u64)> {
    let tree = db.open_tree("identity")?;
    let read = |name: &str| -> Result<Option<u64>> {
        Ok(tree
            .get(name)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    };
    if let (Some(c), Some(m)) = (read("cluster_id")?, read("member_id")?) {
        return Ok((c, m));
    }
    let cluster_id = rand::random::<u64>() | 1;
    let member_id = rand::random::<u64>() | 1;
    tree.insert("cluster_id", &cluster_id.to_be_bytes())?;
    tree.insert("member_id", &member_id.to_be_bytes())?;
    db.flush()?;
    Ok((cluster_id, member_id))
}

/// The leader proposes the revocation of every expired lease.
async fn expire_leases(node: std::sync::Weak<Node>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if node.raft_status().stopped.load(Ordering::Acquire) {
            return;
        }
        if !node.raft_status().is_leader() {
            continue;
        }
        for id in node.lessor.take_expired(Duration::from_secs(3)) {
            let node = node.clone();
            tokio::spawn(async move {
                let op = Op::LeaseRevoke(LeaseRevokeRequest { id });
                match node.propose(op).await {
                    Ok(_) | Err(Error::LeaseNotFound) => {}
                    Err(e) => tracing::warn!(lease = id, "revoking expired lease: {e}"),
                }
            });
        }
    }
}

/// Raises the NOSPACE alarm when the data exceeds the quota (etcd's --quota-backend-bytes).
async fn monitor_space(node: std::sync::Weak<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if node.raft_status().stopped.load(Ordering::Acquire) {
            return;
        }
        node.refresh_alarms();
        let over = node.store.size_on_disk() > node.config.quota_backend_bytes;
        if over && !node.no_space.load(Ordering::Acquire) && node.raft_status().is_leader() {
            let op = Op::Alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: node.member_id,
                alarm: AlarmType::Nospace as i32,
            });
            if let Err(e) = node.propose(op).await {
                tracing::warn!("raising NOSPACE alarm: {e}");
            }
            node.refresh_alarms();
        }
    }
}
