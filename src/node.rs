//! One raftkine member: opens the store, starts raft, the watch hub and the lessor, and offers the
//! API layer the few operations it needs (propose, linearizable read barrier, headers, status).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::command::Op;
use crate::config::ServeConfig;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::lease::Lessor;
use crate::peer::transport::Transport;
use crate::peer::PeerHealth;
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmType, LeaseRevokeRequest, Member, ResponseHeader,
};
use crate::proto::raftkinepb::MemberChange;
use crate::raft::{GroupView, RaftHandle, RaftOptions, RaftStatus};
use crate::store::{Applied, Store};
use crate::tls::peer_client_config_with;
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
    pub identity: Identity,
    pub peer_health: Arc<PeerHealth>,
    /// The raft thread's links to the other members (the peer service tells it when a member
    /// came back, so that its link reconnects at once).
    pub transport: Arc<Transport>,
    /// A channel to the leader's client API, for the few calls only the leader can answer.
    leader_channel: tokio::sync::Mutex<Option<(u64, tonic::transport::Channel)>>,
    /// Set (with the reason) when the member must shut down by itself (the disk guard's
    /// `terminate`); `main` waits for it as for a signal.
    stop_request: tokio::sync::watch::Sender<Option<String>>,
}

impl Node {
    /// Opens the data dir and starts raft. Must be called inside a tokio runtime (it spawns the
    /// lease-expiry and space-monitor tasks).
    pub fn start(config: ServeConfig) -> Result<Arc<Node>> {
        let store = Arc::new(Store::open_with_cache(
            &config.storage_dir,
            config.cache_mib,
        )?);
        Self::start_with(config, store)
    }

    /// Starts on an opened store (`raftkine join` opens it first to store the new identity).
    pub fn start_with(config: ServeConfig, store: Arc<Store>) -> Result<Arc<Node>> {
        let identity = match Identity::load(store.db(), &config.storage_dir)? {
            Some(identity) => identity,
            None => Identity::bootstrap(store.db(), &config.storage_dir, &config.name)?,
        };
        if !identity.joined {
            store.bootstrap_member(&Member {
                id: identity.member_id,
                name: config.name.clone(),
                peer_ur_ls: vec![config.peer_url()],
                client_ur_ls: crate::api::cluster::client_urls_of(&config),
                is_learner: false,
            })?;
        }
        let hub = Arc::new(WatchHub::new(store.revision(), WATCH_BUFFER));
        let lessor = Arc::new(Lessor::new());
        lessor.restore(&store.leases()?);
        let tick = Duration::from_millis(config.heartbeat_interval.max(1));
        let election_ticks = (config.election_timeout / config.heartbeat_interval.max(1)).max(2);
        let transport = Transport::new(
            Arc::new(peer_client_config_with(
                &identity.peer,
                config.dqlite.tls_client_session_cache_size,
            )?),
            tokio::runtime::Handle::current(),
        );
        let peer_health = Arc::new(PeerHealth::default());
        let raft = RaftHandle::start(
            RaftOptions {
                id: identity.member_id,
                wal_dir: crate::raft::wal_dir(&config.storage_dir),
                start: identity.log_start(),
                tick,
                election_ticks: election_ticks as usize,
                max_request_bytes: config.max_request_bytes,
                log_retention: config.snapshot_count,
                target_voters: config.voters,
                seed_peers: identity.seed_peers.clone(),
                voter_grace: config.voter_grace,
            },
            store.clone(),
            hub.clone(),
            lessor.clone(),
            transport.clone(),
            peer_health.clone(),
        )?;
        let node = Arc::new(Node {
            config,
            store,
            hub,
            lessor,
            raft,
            cluster_id: identity.cluster_id,
            member_id: identity.member_id,
            identity,
            peer_health,
            transport,
            leader_channel: tokio::sync::Mutex::new(None),
            stop_request: tokio::sync::watch::channel(None).0,
        });
        node.refresh_alarms();
        tokio::spawn(expire_leases(Arc::downgrade(&node)));
        tokio::spawn(monitor_space(Arc::downgrade(&node)));
        tokio::spawn(crate::disk_guard::watch(Arc::downgrade(&node)));
        tokio::spawn(publish_attributes(Arc::downgrade(&node)));
        Ok(node)
    }

    /// This member's record as it should be in the members table.
    pub fn self_member(&self) -> Member {
        Member {
            id: self.member_id,
            name: self.config.name.clone(),
            peer_ur_ls: vec![self.config.peer_url()],
            client_ur_ls: crate::api::cluster::client_urls_of(&self.config),
            is_learner: self.raft.status.is_learner.load(Ordering::Acquire),
        }
    }

    /// Hands a raft message from a peer to the raft thread.
    pub fn step(&self, message: raft::prelude::Message) -> Result<()> {
        self.raft.step(message)
    }

    /// Proposes a membership change and waits until it is applied.
    pub async fn change_members(&self, change: MemberChange) -> Result<()> {
        match tokio::time::timeout(
            self.config.request_timeout,
            self.raft.change_members(change),
        )
        .await
        {
            Ok(answer) => answer,
            Err(_) => Err(Error::Timeout),
        }
    }

    /// The raft group as this member sees it.
    pub async fn group_view(&self) -> Result<GroupView> {
        self.raft.view().await
    }

    /// The current leader and a channel to its client API (None when this member leads; an
    /// error when no leader is known). Cached until the leader changes.
    pub async fn leader_channel(&self) -> Result<Option<(u64, tonic::transport::Channel)>> {
        let leader = self.raft.status.leader();
        if leader == 0 {
            return Err(Error::NoLeader);
        }
        if leader == self.member_id {
            return Ok(None);
        }
        let mut cached = self.leader_channel.lock().await;
        if let Some((id, channel)) = cached.as_ref() {
            if *id == leader {
                return Ok(Some((leader, channel.clone())));
            }
        }
        let url = self
            .store
            .member(leader)?
            .and_then(|m| m.client_ur_ls.first().cloned())
            .ok_or(Error::NoLeader)?;
        let channel = crate::cli::connect(&url).await?;
        *cached = Some((leader, channel.clone()));
        Ok(Some((leader, channel)))
    }

    /// Drops the cached channel to the leader (it stopped answering).
    pub async fn forget_leader_channel(&self) {
        *self.leader_channel.lock().await = None;
    }

    /// Hands leadership to another caught-up voter and waits (briefly) until it took over.
    pub async fn step_down(&self) -> Result<()> {
        let view = self.group_view().await?;
        let Some(successor) = view
            .voters
            .iter()
            .copied()
            .filter(|id| *id != view.leader)
            .max_by_key(|id| {
                view.progress
                    .iter()
                    .find(|p| p.id == *id)
                    .map_or(0, |p| p.matched)
            })
        else {
            return Err(Error::InvalidArgument(
                "no other voter to hand leadership to".into(),
            ));
        };
        let old = view.leader;
        self.raft.transfer_leader(successor)?;
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        while tokio::time::Instant::now() < deadline {
            let now = self.raft.status.leader();
            if now != 0 && now != old {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(Error::Timeout)
    }

    /// Asks raft to hand leadership to `to` (this member must lead).
    pub fn transfer_leader(&self, to: u64) -> Result<()> {
        self.raft.transfer_leader(to)
    }

    /// Proposes a mutation and waits for its answer, within the request timeout.
    pub async fn propose(&self, op: Op) -> Result<Applied> {
        match tokio::time::timeout(self.config.request_timeout, self.raft.propose(op)).await {
            Ok(answer) => answer,
            Err(_) => {
                crate::metrics::metrics().proposals_failed.inc();
                Err(Error::Timeout)
            }
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
        if self.store.nospace_alarm() {
            return Err(Error::NoSpace);
        }
        Ok(())
    }

    /// Re-reads the alarms from the table (the apply path also does after each alarm change).
    pub fn refresh_alarms(&self) {
        if let Err(e) = self.store.refresh_alarm_state() {
            tracing::warn!("reading alarms: {e}");
        }
    }

    /// Raises `alarm` for this member through raft, unless this member already raised it.
    pub async fn raise_alarm(&self, alarm: AlarmType) -> Result<()> {
        let raised = self
            .store
            .alarms()?
            .iter()
            .any(|(member, kind)| *member == self.member_id && *kind == alarm as i32);
        if !raised {
            self.propose(Op::Alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.member_id,
                alarm: alarm as i32,
            }))
            .await?;
            self.refresh_alarms();
        }
        Ok(())
    }

    /// Asks the process to shut down cleanly (see [`Node::stop_requested`]).
    pub fn request_stop(&self, reason: String) {
        self.stop_request.send_replace(Some(reason));
    }

    /// Resolves with the reason once [`Node::request_stop`] was called.
    pub async fn stop_requested(&self) -> String {
        let mut requests = self.stop_request.subscribe();
        let reason = match requests.wait_for(|r| r.is_some()).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            // The sender lives as long as the node: never reached while it runs.
            None => std::future::pending().await,
        }
    }

    /// Stops raft (pending requests fail with `Stopped`) and flushes the store.
    pub fn shutdown(&self) {
        self.raft.status.stopped.store(true, Ordering::Release);
        let _ = self.store.flush();
    }
}

/// Publishes this member's name and URLs through raft when the members table lacks or differs
/// from them (etcd publishes member attributes the same way).
async fn publish_attributes(node: std::sync::Weak<Node>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if node.raft_status().stopped.load(Ordering::Acquire) {
            return;
        }
        if !node.raft_status().has_leader() {
            continue;
        }
        let wanted = node.self_member();
        let current = node.store.member(node.member_id).ok().flatten();
        let up_to_date = current.as_ref().is_some_and(|m| {
            m.name == wanted.name
                && m.peer_ur_ls == wanted.peer_ur_ls
                && m.client_ur_ls == wanted.client_ur_ls
        });
        if !up_to_date {
            if let Err(e) = node.propose(Op::MemberAttributes(wanted)).await {
                tracing::debug!("publishing member attributes: {e}");
            }
            continue;
        }
        let domain = node.config.failure_domain;
        if node.store.failure_domain(node.member_id).ok() == Some(domain) {
            return;
        }
        let published = node
            .propose(Op::FailureDomain(crate::proto::raftkinepb::FailureDomain {
                member_id: node.member_id,
                domain,
            }))
            .await;
        if let Err(e) = published {
            tracing::debug!("publishing the failure domain: {e}");
        }
    }
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
        if over && !node.store.nospace_alarm() && node.raft_status().is_leader() {
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
