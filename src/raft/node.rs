//! The raft thread: owns the `RawNode`, turns proposals into log entries, makes them durable
//! (one fdatasync of the write-ahead log per Ready: group commit), applies committed entries
//! through `Store::apply`, publishes their events to the watch hub and answers the proposers —
//! in that order. A second thread flushes the table in sled every [`TABLE_FLUSH_INTERVAL`];
//! the log keeps what the table has not flushed yet.
//!
//! Linearizable reads ask for a ReadIndex; all reads waiting in one loop turn share one request,
//! and each is released once the applied index reaches the read index. A member that leads a
//! group where it is the only voter answers them without a round through this thread (see
//! [`RaftStatus::sole_voter`]). Messages to other members
//! go through the peer transport; messages from them arrive as `Request::Step`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType, Message,
    MessageType,
};
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole};
use tokio::sync::oneshot;

use super::log_store::{LogStart, LogStore};
use super::logger::raft_logger;
use crate::command::{Command, Op};
use crate::error::{Error, Result};
use crate::lease::Lessor;
use crate::metrics::metrics;
use crate::peer::transport::Transport;
use crate::peer::{url_to_addr, PeerHealth};
use crate::proto::raftkinepb::{member_change::Kind, MemberChange};
use crate::store::{Applied, Store};
use crate::watch::WatchHub;

/// Settings of the raft group.
#[derive(Clone, Debug)]
pub struct RaftOptions {
    /// This member's raft id (never 0).
    pub id: u64,
    /// Where the write-ahead log lives.
    pub wal_dir: std::path::PathBuf,
    /// How the log begins when it does not exist yet.
    pub start: LogStart,
    /// Heartbeat interval (one raft tick).
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Proposals larger than this are refused (etcd's --max-request-bytes).
    pub max_request_bytes: usize,
    /// Applied entries kept in the log before it is compacted.
    pub log_retention: u64,
    /// Learners are promoted while fewer voters than this exist.
    pub target_voters: usize,
    /// Peers to reach before the member list is known (a member that just joined).
    pub seed_peers: Vec<(u64, String)>,
    /// A voter silent for this long is replaced by a caught-up standby.
    pub voter_grace: Duration,
}

/// What the rest of the node may read about raft without asking the thread.
#[derive(Default, Debug)]
pub struct RaftStatus {
    pub leader: AtomicU64,
    pub term: AtomicU64,
    pub commit_index: AtomicU64,
    pub applied_index: AtomicU64,
    /// The table's applied index as of its last flush (the log is kept after it).
    pub durable_index: AtomicU64,
    pub is_leader: AtomicBool,
    pub is_learner: AtomicBool,
    pub stopped: AtomicBool,
    /// This member leads and is the only voter, with no conf change pending: no other member
    /// can have acknowledged a write that `commit_index` does not cover, so a linearizable read
    /// only waits for `applied_index` to reach it. Set by the raft thread before anything
    /// leaves it (a message, an answer), after `commit_index`.
    pub sole_voter: AtomicBool,
    /// Woken whenever `applied_index` moves.
    pub applied: tokio::sync::Notify,
}

impl RaftStatus {
    pub fn leader(&self) -> u64 {
        self.leader.load(Ordering::Acquire)
    }
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }
    pub fn has_leader(&self) -> bool {
        self.leader() != 0
    }
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }
}

/// One member's replication progress, as the leader sees it.
#[derive(Clone, Debug, Default)]
pub struct PeerProgress {
    pub id: u64,
    pub matched: u64,
    pub recent_active: bool,
}

/// A consistent picture of the group for status commands.
#[derive(Clone, Debug, Default)]
pub struct GroupView {
    pub leader: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Filled on the leader only.
    pub progress: Vec<PeerProgress>,
}

enum Request {
    Propose {
        op: Op,
        reply: oneshot::Sender<Result<Applied>>,
    },
    ChangeMembers {
        change: MemberChange,
        reply: oneshot::Sender<Result<()>>,
    },
    Read {
        reply: oneshot::Sender<Result<()>>,
    },
    Step(Box<Message>),
    View {
        reply: oneshot::Sender<GroupView>,
    },
    TransferLeader(u64),
}

/// The handle the node uses to talk to the raft thread.
pub struct RaftHandle {
    requests: mpsc::Sender<Request>,
    pub status: Arc<RaftStatus>,
    thread: Option<JoinHandle<()>>,
    flusher: Option<JoinHandle<()>>,
}

/// How often the table is flushed to disk (the write-ahead log covers it in between; a
/// restart applies at most this much of the log again).
pub const TABLE_FLUSH_INTERVAL: Duration = Duration::from_millis(500);

impl RaftHandle {
    /// Starts the raft thread over the store's database.
    pub fn start(
        options: RaftOptions,
        store: Arc<Store>,
        hub: Arc<WatchHub>,
        lessor: Arc<Lessor>,
        transport: Arc<Transport>,
        peer_health: Arc<PeerHealth>,
    ) -> Result<RaftHandle> {
        let mut log = LogStore::open(store.db(), &options.wal_dir, options.start.clone())?;
        if log.interrupted_install {
            tracing::warn!("the last snapshot install was interrupted; waiting for a new one");
            store.clear()?;
            log.end_interrupted_install()?;
            store.flush()?;
        }
        // Entries are applied only once committed: a commit index on disk below the applied
        // index (a crash between the two writes) is raised to it.
        log.raise_commit_to(store.applied_index())?;
        let snapshot_store = store.clone();
        log.set_snapshot_source(Box::new(move || snapshot_store.raft_snapshot()));
        let applied = store.applied_index().max(log.first_index_now() - 1);
        let config = raft::Config {
            id: options.id,
            election_tick: options.election_ticks,
            heartbeat_tick: 1,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        config.validate()?;
        let raw = RawNode::new(&config, log, &raft_logger())?;
        let status = Arc::new(RaftStatus::default());
        // Reads wait for this index to reach their read index: it starts where the table is
        // (a restarted member with nothing new to apply would otherwise hold every read).
        status.applied_index.store(applied, Ordering::Release);
        status
            .durable_index
            .store(store.applied_index(), Ordering::Release);
        let (requests, inbox) = mpsc::channel();
        let mut worker = Worker {
            raw,
            options,
            store,
            hub,
            lessor,
            transport,
            peer_health,
            started: Instant::now(),
            status: status.clone(),
            inbox,
            pending: HashMap::new(),
            pending_members: HashMap::new(),
            member_changes_in_flight: HashMap::new(),
            next_request_id: rand::random::<u64>() >> 16,
            reads_unsent: vec![],
            reads_by_ctx: HashMap::new(),
            reads_waiting_apply: vec![],
            // Random, as the request ids: a leader may still hold a ReadIndex context of this
            // member's previous run, and must not answer a new read with that old index.
            next_read_ctx: rand::random::<u64>() >> 16,
            was_leader: false,
            last_housekeeping: Instant::now(),
            heartbeats_sent: HashMap::new(),
            seen_leader: 0,
            campaign_at: None,
        };
        metrics()
            .keys_total
            .set(worker.store.count_live_keys()? as i64);
        worker.connect_peers()?;
        worker.campaign_if_alone()?;
        let flusher = {
            let store = worker.store.clone();
            let status = status.clone();
            std::thread::Builder::new()
                .name("table-flush".into())
                .spawn(move || flush_table_periodically(&store, &status))?
        };
        let thread = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || worker.run())?;
        Ok(RaftHandle {
            requests,
            status,
            thread: Some(thread),
            flusher: Some(flusher),
        })
    }

    fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<oneshot::Receiver<T>> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .map_err(|_| Error::Stopped)?;
        Ok(answer)
    }

    /// Proposes a command and waits until it is applied (or fails).
    pub async fn propose(&self, op: Op) -> Result<Applied> {
        self.ask(|reply| Request::Propose { op, reply })?
            .await
            .map_err(|_| Error::Stopped)?
    }

    /// Proposes a membership change and waits until it is applied.
    pub async fn change_members(&self, change: MemberChange) -> Result<()> {
        self.ask(|reply| Request::ChangeMembers { change, reply })?
            .await
            .map_err(|_| Error::Stopped)?
    }

    /// Waits until this member has applied everything committed when the call was made.
    pub async fn read_index(&self) -> Result<()> {
        let status = &self.status;
        if status.sole_voter.load(Ordering::Acquire) {
            let index = status.commit_index.load(Ordering::Acquire);
            loop {
                let applied = status.applied.notified();
                if status.applied_index.load(Ordering::Acquire) >= index {
                    return Ok(());
                }
                if status.stopped.load(Ordering::Acquire) {
                    return Err(Error::Stopped);
                }
                applied.await;
            }
        }
        self.ask(|reply| Request::Read { reply })?
            .await
            .map_err(|_| Error::Stopped)?
    }

    /// The group as this member sees it.
    pub async fn view(&self) -> Result<GroupView> {
        self.ask(|reply| Request::View { reply })?
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Hands a message from a peer to raft.
    pub fn step(&self, message: Message) -> Result<()> {
        self.requests
            .send(Request::Step(Box::new(message)))
            .map_err(|_| Error::Stopped)
    }

    /// Asks the leader (this member) to hand leadership to `to`.
    pub fn transfer_leader(&self, to: u64) -> Result<()> {
        self.requests
            .send(Request::TransferLeader(to))
            .map_err(|_| Error::Stopped)
    }

    /// Stops the threads (pending requests fail with `Stopped`).
    pub fn stop(&mut self) {
        self.status.stopped.store(true, Ordering::Release);
        self.status.applied.notify_waiters();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

impl Drop for RaftHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The flusher thread: makes the table durable every [`TABLE_FLUSH_INTERVAL`] and records up
/// to which applied index it is (the log may be compacted up to there).
fn flush_table_periodically(store: &Store, status: &RaftStatus) {
    let step = Duration::from_millis(20);
    let mut since = Duration::ZERO;
    while !status.stopped.load(Ordering::Acquire) {
        std::thread::sleep(step);
        since += step;
        if since < TABLE_FLUSH_INTERVAL {
            continue;
        }
        since = Duration::ZERO;
        // Everything applied before the flush starts is durable when it returns.
        let applied = store.applied_index();
        if applied == status.durable_index.load(Ordering::Acquire) {
            continue;
        }
        match store.flush() {
            Ok(()) => status.durable_index.store(applied, Ordering::Release),
            Err(e) => tracing::error!("flushing the table: {e}"),
        }
    }
}

type Waiters = Vec<oneshot::Sender<Result<()>>>;

struct Worker {
    raw: RawNode<LogStore>,
    options: RaftOptions,
    store: Arc<Store>,
    hub: Arc<WatchHub>,
    lessor: Arc<Lessor>,
    transport: Arc<Transport>,
    peer_health: Arc<PeerHealth>,
    started: Instant,
    status: Arc<RaftStatus>,
    inbox: mpsc::Receiver<Request>,
    /// Proposals of this member waiting to be applied, by request id.
    pending: HashMap<u64, oneshot::Sender<Result<Applied>>>,
    pending_members: HashMap<u64, oneshot::Sender<Result<()>>>,
    /// Member changes a caller waits for, with when they were last proposed: raft-rs drops a
    /// conf change proposed while another is pending, so a leader holds them back until none
    /// is and proposes them then (same request id), until applied or their caller gave up.
    member_changes_in_flight: HashMap<u64, (MemberChange, Instant)>,
    next_request_id: u64,
    /// Reads received this turn, not yet given a ReadIndex request.
    reads_unsent: Waiters,
    reads_by_ctx: HashMap<Vec<u8>, Waiters>,
    /// (read index, waiters) until applied reaches the index.
    reads_waiting_apply: Vec<(u64, Waiters)>,
    next_read_ctx: u64,
    was_leader: bool,
    last_housekeeping: Instant,
    /// When the oldest unanswered heartbeat to each peer was sent (peer round-trip metric).
    heartbeats_sent: HashMap<u64, Instant>,
    /// The last leader seen (leader-change metric).
    seen_leader: u64,
    /// A campaign to start at this time, unless the lost leader (or another) is heard from.
    campaign_at: Option<(u64, Instant)>,
}

/// Follows the number of live keys from applied events: a put of version 1 creates a key, a
/// delete removes one.
fn count_keys(events: &[crate::proto::mvccpb::Event]) {
    use crate::proto::mvccpb::event::EventType;
    let mut delta = 0i64;
    for e in events {
        if e.r#type == EventType::Delete as i32 {
            delta -= 1;
        } else if e.kv.as_ref().is_some_and(|kv| kv.version == 1) {
            delta += 1;
        }
    }
    if delta != 0 {
        metrics().keys_total.add(delta);
    }
}

/// A follower that lost its leader's stream campaigns after a random delay below this.
const LOST_LEADER_CAMPAIGN: Duration = Duration::from_millis(300);
/// At most this many requests are taken from the inbox per loop turn (bounds Ready size).
const MAX_REQUESTS_PER_TURN: usize = 4096;
/// A learner this close to the leader's log counts as caught up.
const CAUGHT_UP_LAG: u64 = 64;

impl Worker {
    fn run(mut self) {
        // A member alone has elected itself already (`campaign_if_alone`): say so at once.
        if let Err(e) = self.on_ready() {
            tracing::error!("raft loop stopped: {e}");
            return;
        }
        let mut last_tick = Instant::now();
        while !self.status.stopped.load(Ordering::Acquire) {
            let mut wait = self.options.tick.saturating_sub(last_tick.elapsed());
            if let Some((_, at)) = self.campaign_at {
                wait = wait.min(at.saturating_duration_since(Instant::now()));
            }
            match self.inbox.recv_timeout(wait) {
                Ok(req) => {
                    self.handle(req);
                    for _ in 1..MAX_REQUESTS_PER_TURN {
                        match self.inbox.try_recv() {
                            Ok(req) => self.handle(req),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            for id in self.transport.take_lost() {
                self.on_peer_lost(id);
            }
            if let Err(e) = self.campaign_if_due() {
                tracing::debug!("campaign after losing the leader: {e}");
            }
            self.send_reads();
            if last_tick.elapsed() >= self.options.tick {
                self.raw.tick();
                last_tick = Instant::now();
            }
            if let Err(e) = self.on_ready() {
                tracing::error!("raft loop stopped: {e}");
                break;
            }
            if self.last_housekeeping.elapsed() >= Duration::from_secs(1) {
                self.last_housekeeping = Instant::now();
                self.housekeeping();
            }
            metrics().proposals_pending.set(self.pending.len() as i64);
        }
        self.status.sole_voter.store(false, Ordering::Release);
        self.status.stopped.store(true, Ordering::Release);
        self.status.applied.notify_waiters();
        self.fail_all();
        if let Err(e) = self.raw.store().sync() {
            tracing::error!("syncing the raft log at shutdown: {e}");
        }
        let applied = self.store.applied_index();
        if self.store.flush().is_ok() {
            self.status.durable_index.store(applied, Ordering::Release);
        }
    }

    /// The stream to a peer ended. If it was this follower's leader (killed, most likely), its
    /// leader lease ends now (so it grants the other followers' votes) and it campaigns after a
    /// random [`LOST_LEADER_CAMPAIGN`] delay (so two followers seldom campaign at once), instead
    /// of waiting out the whole randomized election timeout. Safe if the leader is in fact
    /// alive: the election starts with a pre-vote, which every member still hearing from the
    /// leader refuses.
    fn on_peer_lost(&mut self, id: u64) {
        let raft = &mut self.raw.raft;
        if raft.state != StateRole::Follower || raft.leader_id != id {
            return;
        }
        raft.election_elapsed = raft.election_elapsed.max(raft.election_timeout());
        let delay = rand::random::<u64>() % LOST_LEADER_CAMPAIGN.as_millis() as u64;
        self.campaign_at = Some((id, Instant::now() + Duration::from_millis(delay)));
        tracing::info!(
            leader = id,
            delay_ms = delay,
            "lost the stream to the leader"
        );
    }

    /// The campaign `on_peer_lost` scheduled, if it is due and nothing was heard since from the
    /// lost leader (a message from it resets the election clock) or from a new one.
    fn campaign_if_due(&mut self) -> Result<()> {
        let Some((lost, at)) = self.campaign_at else {
            return Ok(());
        };
        if Instant::now() < at {
            return Ok(());
        }
        self.campaign_at = None;
        let raft = &self.raw.raft;
        if raft.state == StateRole::Follower
            && raft.leader_id == lost
            && raft.election_elapsed >= raft.election_timeout()
        {
            self.raw.campaign()?;
        }
        Ok(())
    }

    fn campaign_if_alone(&mut self) -> Result<()> {
        let cs = self.raw.store().conf_state();
        if cs.voters == [self.options.id] && self.raw.raft.state != StateRole::Leader {
            self.raw.campaign()?;
        }
        Ok(())
    }

    /// Points the transport at every other member's peer URL (from the replicated members).
    fn connect_peers(&mut self) -> Result<()> {
        let members = self.store.members()?;
        let mut known = vec![];
        // The addresses learned when joining stand in for members whose record is not in the
        // table yet (a first node publishes its own record shortly after it starts).
        let cs = self.raw.store().conf_state();
        let in_group =
            |id: &u64| members.is_empty() || cs.voters.contains(id) || cs.learners.contains(id);
        for (id, addr) in &self.options.seed_peers {
            if *id != self.options.id && in_group(id) && !members.iter().any(|m| m.id == *id) {
                self.transport.set_peer(*id, addr);
                known.push(*id);
            }
        }
        for m in &members {
            if m.id == self.options.id {
                continue;
            }
            if let Some(url) = m.peer_ur_ls.first() {
                self.transport.set_peer(m.id, &url_to_addr(url));
                known.push(m.id);
            }
        }
        for id in self.transport.peers() {
            if !known.contains(&id) {
                self.transport.remove_peer(id);
            }
        }
        let me = members.iter().find(|m| m.id == self.options.id);
        self.status
            .is_learner
            .store(me.is_some_and(|m| m.is_learner), Ordering::Release);
        Ok(())
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Propose { op, reply } => self.propose(op, reply),
            Request::ChangeMembers { change, reply } => {
                self.propose_member_change(change, Some(reply))
            }
            Request::Read { reply } => self.reads_unsent.push(reply),
            Request::Step(m) => {
                if m.get_msg_type() == MessageType::MsgHeartbeatResponse {
                    self.heartbeat_answered(m.from);
                }
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!("raft step: {e}");
                }
            }
            Request::View { reply } => {
                let _ = reply.send(self.view());
            }
            Request::TransferLeader(to) => self.raw.transfer_leader(to),
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_request_id += 1;
        self.next_request_id
    }

    fn propose(&mut self, op: Op, reply: oneshot::Sender<Result<Applied>>) {
        let request_id = self.next_id();
        let cmd = Command {
            proposer: self.options.id,
            request_id,
            op: Some(op),
        };
        let data = cmd.encode_to_vec();
        if data.len() > self.options.max_request_bytes {
            let _ = reply.send(Err(Error::RequestTooLarge));
            return;
        }
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                self.pending.insert(request_id, reply);
            }
            Err(raft::Error::ProposalDropped) => {
                metrics().proposals_failed.inc();
                let _ = reply.send(Err(Error::NoLeader));
            }
            Err(e) => {
                metrics().proposals_failed.inc();
                let _ = reply.send(Err(Error::Raft(e)));
            }
        }
    }

    fn propose_member_change(
        &mut self,
        mut change: MemberChange,
        reply: Option<oneshot::Sender<Result<()>>>,
    ) {
        let request_id = self.next_id();
        change.proposer = self.options.id;
        change.request_id = request_id;
        match self.submit_member_change(&change) {
            Ok(()) => {
                if let Some(r) = reply {
                    self.pending_members.insert(request_id, r);
                    self.member_changes_in_flight
                        .insert(request_id, (change, Instant::now()));
                }
            }
            Err(e) => {
                if let Some(r) = reply {
                    let _ = r.send(Err(e));
                }
            }
        }
    }

    /// Proposes a member change as a raft conf change (a leader with a conf change still
    /// pending waits: see `member_changes_in_flight`).
    fn submit_member_change(&mut self, change: &MemberChange) -> Result<()> {
        let id = change.member.as_ref().map_or(0, |m| m.id);
        let change_type = match Kind::try_from(change.kind) {
            Ok(Kind::AddLearner) | Ok(Kind::Demote) => ConfChangeType::AddLearnerNode,
            Ok(Kind::Promote) => ConfChangeType::AddNode,
            Ok(Kind::Remove) => ConfChangeType::RemoveNode,
            Err(_) => return Err(Error::InvalidArgument("unknown member change".into())),
        };
        let busy = self.raw.raft.state == StateRole::Leader
            && (self.raw.raft.has_pending_conf()
                || !self.raw.store().conf_state().voters_outgoing.is_empty());
        if busy {
            return Ok(());
        }
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = id;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        cc.set_context(change.encode_to_vec().into());
        self.raw
            .propose_conf_change(vec![], cc)
            .map_err(|e| match e {
                raft::Error::ProposalDropped => Error::NoLeader,
                e => Error::Raft(e),
            })
    }

    /// On the leader, proposes again the member changes not applied within a second (callers
    /// still waiting). Only a leader retries: it knows whether a conf change is pending, so a
    /// change is never in its log twice (a follower's forwarded proposal may still commit).
    fn retry_member_changes(&mut self) {
        let pending = &self.pending_members;
        self.member_changes_in_flight
            .retain(|id, _| pending.get(id).is_some_and(|r| !r.is_closed()));
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        let due: Vec<MemberChange> = self
            .member_changes_in_flight
            .values()
            .filter(|(_, at)| at.elapsed() >= Duration::from_secs(1))
            .map(|(c, _)| c.clone())
            .collect();
        for change in due {
            if self.submit_member_change(&change).is_ok() {
                if let Some(entry) = self.member_changes_in_flight.get_mut(&change.request_id) {
                    entry.1 = Instant::now();
                }
            }
        }
    }

    fn send_reads(&mut self) {
        // Without a leader a ReadIndex request would be dropped: keep the reads until one is
        // known (they fail by the node's request timeout if none appears).
        if self.reads_unsent.is_empty() || self.raw.raft.leader_id == 0 {
            return;
        }
        let ctx = self.next_read_ctx.to_be_bytes().to_vec();
        self.next_read_ctx += 1;
        self.raw.read_index(ctx.clone());
        self.reads_by_ctx
            .insert(ctx, std::mem::take(&mut self.reads_unsent));
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        self.send_messages(ready.take_messages());
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone())?;
        }
        // Persist first. New entries and a new term or vote must be on disk before anything
        // is sent or applied (raft's `must_sync`); a hard state whose only change is the commit
        // index is written without an fsync of its own: after a crash, the commit index is
        // raised to the table's applied index at start (`raise_commit_to`) and raft learns the
        // rest from the leader or, alone, from its durable log.
        if !ready.entries().is_empty() {
            self.raw.store().append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            self.raw.store().set_hard_state(hs)?;
        }
        if ready.must_sync() {
            let started = Instant::now();
            self.raw.store().sync()?;
            metrics().wal_fsync.observe(started.elapsed().as_secs_f64());
            tracing::trace!(
                entries = ready.entries().len(),
                flush_us = started.elapsed().as_micros() as u64,
                "persisted a Ready"
            );
        }
        // Acknowledgements of what was just persisted go out before applying: the leader is
        // waiting for them, and applying can take longer than the fsync did.
        self.send_messages(ready.take_persisted_messages());
        self.apply_entries(ready.take_committed_entries())?;
        for rs in ready.take_read_states() {
            if let Some(waiters) = self.reads_by_ctx.remove(&rs.request_ctx) {
                self.reads_waiting_apply.push((rs.index, waiters));
            }
        }
        if let Some(ss) = ready.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state);
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.store().set_commit(commit)?;
        }
        self.send_messages(light.take_messages());
        let apply_started = Instant::now();
        let committed = light.take_committed_entries();
        let count = committed.len();
        self.apply_entries(committed)?;
        tracing::trace!(
            count,
            apply_us = apply_started.elapsed().as_micros() as u64,
            "applied"
        );
        self.raw.advance_apply();
        self.release_reads();
        self.publish_status();
        self.compact_log()?;
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: raft::prelude::Snapshot) -> Result<()> {
        let meta = snapshot.get_metadata();
        tracing::info!(
            index = meta.index,
            term = meta.term,
            "installing snapshot from the leader"
        );
        // Marked as begun and durable before the table changes, the table durable before the
        // log restarts at the snapshot: a crash at any point is either recovered or noticed.
        self.raw.store().begin_snapshot_install()?;
        self.store.flush()?;
        self.store
            .install_snapshot(snapshot.get_data(), meta.index)?;
        self.store.flush()?;
        self.raw.store().apply_snapshot(meta)?;
        self.store.flush()?;
        self.status
            .durable_index
            .store(meta.index, Ordering::Release);
        self.lessor.restore(&self.store.leases()?);
        metrics()
            .keys_total
            .set(self.store.count_live_keys()? as i64);
        // Watch streams see a revision with no events and catch up from the table.
        self.hub.publish(self.store.revision(), vec![]);
        self.connect_peers()?;
        self.status
            .applied_index
            .store(meta.index, Ordering::Release);
        Ok(())
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        if leader != self.status.leader() || leader == 0 {
            // ReadIndex requests sent to a former leader may never be answered: ask again.
            for (_, waiters) in self.reads_by_ctx.drain() {
                self.reads_unsent.extend(waiters);
            }
        }
        if leader != 0 && leader != self.seen_leader {
            metrics().leader_changes.inc();
        }
        if leader != 0 {
            self.seen_leader = leader;
        }
        self.status.leader.store(leader, Ordering::Release);
        let is_leader = role == StateRole::Leader;
        self.status.is_leader.store(is_leader, Ordering::Release);
        if is_leader && !self.was_leader {
            let election = self.options.tick * self.options.election_ticks as u32;
            self.lessor.promote(election);
            tracing::info!(term = self.raw.raft.term, "became leader");
        }
        if leader == 0 || (!is_leader && self.was_leader) {
            // Proposals in flight may never commit under another leader: fail them promptly
            // (the client may retry; the outcome of a failed write is unknown, as with etcd).
            for (_, reply) in self.pending.drain() {
                metrics().proposals_failed.inc();
                let _ = reply.send(Err(Error::TimeoutLeaderFail));
            }
        }
        self.was_leader = is_leader;
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<()> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        // They are committed: say so before any proposer hears back (Status.raft_index).
        self.status
            .commit_index
            .fetch_max(last.index, Ordering::AcqRel);
        let started = Instant::now();
        self.apply_entries_timed(entries)?;
        metrics()
            .apply_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn apply_entries_timed(&mut self, entries: Vec<Entry>) -> Result<()> {
        // Consecutive key-value commands are applied as one group (one sled batch).
        let mut run: Vec<(u64, Command)> = vec![];
        let last = entries.last().map(|e| e.index);
        for entry in entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if entry.data.is_empty() || entry.index <= self.store.applied_index() {
                        // A new leader's empty entry, or already in the table (a replay).
                    } else {
                        let cmd = Command::decode_entry(&entry.data)?;
                        if !Store::groupable(&cmd) {
                            self.apply_run(&mut run)?;
                        }
                        run.push((entry.index, cmd));
                        if !Store::groupable(&run[run.len() - 1].1) {
                            self.apply_run(&mut run)?;
                        }
                    }
                }
                EntryType::EntryConfChange => {
                    self.apply_run(&mut run)?;
                    let cc = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|e| Error::Corrupt(format!("conf change: {e}")))?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.raw.store().set_conf_state(&cs)?;
                }
                EntryType::EntryConfChangeV2 => {
                    self.apply_run(&mut run)?;
                    self.apply_member_change(&entry)?;
                }
            }
            if run.is_empty() {
                self.status
                    .applied_index
                    .store(entry.index, Ordering::Release);
            }
        }
        self.apply_run(&mut run)?;
        if let Some(last) = last {
            self.status.applied_index.store(last, Ordering::Release);
        }
        self.status.applied.notify_waiters();
        Ok(())
    }

    /// Applies a run of commands through the one apply function, then hands their events to
    /// the watch hub and their answers to the proposers, in order.
    fn apply_run(&mut self, run: &mut Vec<(u64, Command)>) -> Result<()> {
        let Some(&(last_index, _)) = run.last() else {
            return Ok(());
        };
        let cmds: Vec<(u64, &Command)> = run.iter().map(|(i, c)| (*i, c)).collect();
        let answers = self.store.apply_group(&cmds)?;
        for ((_, cmd), mut answer) in run.drain(..).zip(answers) {
            if let Ok(applied) = &mut answer {
                if !applied.lease_effects.is_empty() {
                    self.lessor.on_applied(&applied.lease_effects);
                }
                if !applied.events.is_empty() {
                    count_keys(&applied.events);
                    // The events go to the watch hub; the proposer needs only the response.
                    self.hub
                        .publish(applied.revision, std::mem::take(&mut applied.events));
                }
            }
            if cmd.proposer == self.options.id {
                if let Some(reply) = self.pending.remove(&cmd.request_id) {
                    let _ = reply.send(answer);
                }
            }
        }
        self.status
            .applied_index
            .store(last_index, Ordering::Release);
        Ok(())
    }

    fn apply_member_change(&mut self, entry: &Entry) -> Result<()> {
        let cc = ConfChangeV2::parse_from_bytes(&entry.data)
            .map_err(|e| Error::Corrupt(format!("conf change: {e}")))?;
        let cs = self.raw.apply_conf_change(&cc)?;
        self.raw.store().set_conf_state(&cs)?;
        if entry.index <= self.store.applied_index() {
            return Ok(());
        }
        let change = if cc.get_context().is_empty() {
            None
        } else {
            Some(MemberChange::decode(cc.get_context())?)
        };
        match &change {
            Some(change) => self.store.apply_member_change(entry.index, change)?,
            None => self
                .store
                .commit_batch(Default::default(), entry.index, None, None)?,
        }
        self.connect_peers()?;
        if let Some(change) = change {
            if change.proposer == self.options.id {
                self.member_changes_in_flight.remove(&change.request_id);
                if let Some(reply) = self.pending_members.remove(&change.request_id) {
                    let _ = reply.send(Ok(()));
                }
            }
            tracing::info!(
                member = change.member.as_ref().map_or(0, |m| m.id),
                kind = ?Kind::try_from(change.kind),
                "membership changed"
            );
        }
        Ok(())
    }

    fn release_reads(&mut self) {
        if self.reads_waiting_apply.is_empty() {
            return;
        }
        let applied = self.status.applied_index.load(Ordering::Acquire);
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_waiting_apply)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.reads_waiting_apply = waiting;
        for (_, waiters) in ready {
            for w in waiters {
                let _ = w.send(Ok(()));
            }
        }
    }

    /// What readers may rely on without asking this thread (see [`RaftStatus::sole_voter`]):
    /// called before messages leave and at the end of every loop turn.
    fn publish_read_state(&self) {
        let raft = &self.raw.raft;
        self.status
            .commit_index
            .fetch_max(raft.raft_log.committed, Ordering::AcqRel);
        let alone = raft.state == StateRole::Leader
            && raft.prs().is_singleton()
            && !raft.has_pending_conf();
        self.status.sole_voter.store(alone, Ordering::Release);
    }

    fn publish_status(&self) {
        self.publish_read_state();
        let raft = &self.raw.raft;
        self.status.term.store(raft.term, Ordering::Release);
        self.status
            .commit_index
            .store(raft.raft_log.committed, Ordering::Release);
        self.status.leader.store(raft.leader_id, Ordering::Release);
        let m = metrics();
        m.proposals_committed.set(raft.raft_log.committed as i64);
        m.proposals_applied.set(self.store.applied_index() as i64);
        m.has_leader.set(i64::from(raft.leader_id != 0));
        m.is_leader.set(i64::from(raft.state == StateRole::Leader));
    }

    /// Hands messages to the transport, noting when heartbeats leave (peer round-trip metric).
    fn send_messages(&mut self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        self.publish_read_state();
        let now = Instant::now();
        // An unanswered heartbeat older than this is forgotten (lost, or the peer is down).
        let stale = self.options.tick * (self.options.election_ticks as u32);
        for m in &messages {
            if m.get_msg_type() == MessageType::MsgHeartbeat {
                let sent = self.heartbeats_sent.entry(m.to).or_insert(now);
                if now.duration_since(*sent) > stale {
                    *sent = now;
                }
            }
        }
        self.transport.send(messages);
    }

    fn heartbeat_answered(&mut self, from: u64) {
        if let Some(sent) = self.heartbeats_sent.remove(&from) {
            metrics()
                .peer_round_trip
                .with_label_values(&[&format!("{from:x}")])
                .observe(sent.elapsed().as_secs_f64());
        }
    }

    fn compact_log(&mut self) -> Result<()> {
        let applied = self.store.applied_index();
        let first = self.raw.store().first_index_now();
        let retention = self.options.log_retention.max(1);
        if applied > first + 2 * retention {
            let durable = self.status.durable_index.load(Ordering::Acquire);
            self.raw.store().compact(applied - retention, durable)?;
        }
        Ok(())
    }

    fn view(&self) -> GroupView {
        let raft = &self.raw.raft;
        let cs = self.raw.store().conf_state();
        let progress = if raft.state == StateRole::Leader {
            raft.prs()
                .iter()
                .map(|(id, pr)| PeerProgress {
                    id: *id,
                    matched: pr.matched,
                    recent_active: pr.recent_active || *id == self.options.id,
                })
                .collect()
        } else {
            vec![]
        };
        GroupView {
            leader: raft.leader_id,
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.store.applied_index(),
            last_index: raft.raft_log.last_index(),
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
            progress,
        }
    }

    /// Once a second: report unreachable peers, and (on the leader) promote caught-up learners
    /// while the group has fewer voters than wanted.
    fn housekeeping(&mut self) {
        self.retry_member_changes();
        for id in self.transport.take_unreachable() {
            self.raw.report_unreachable(id);
            let in_snapshot = self
                .raw
                .raft
                .prs()
                .get(id)
                .is_some_and(|pr| pr.state == ProgressState::Snapshot);
            if in_snapshot {
                self.raw.report_snapshot(id, SnapshotStatus::Failure);
            }
        }
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        let raft = &self.raw.raft;
        if raft.has_pending_conf() {
            return; // one membership change at a time
        }
        let cs = self.raw.store().conf_state();
        if !cs.voters_outgoing.is_empty() {
            return;
        }
        let target = self.options.target_voters;
        let standby = self.ready_standby(&cs.learners);
        let dead_voter = cs.voters.iter().copied().find(|id| self.is_dead(*id));
        let change = if cs.voters.len() < target {
            standby.map(|id| (id, Kind::Promote))
        } else if cs.voters.len() > target {
            dead_voter.map(|id| (id, Kind::Demote))
        } else {
            // A full set with a dead voter: bring a standby in first, demote the dead one next.
            dead_voter.and(standby).map(|id| (id, Kind::Promote))
        };
        let Some((id, kind)) = change else { return };
        let member = match self.store.member(id) {
            Ok(Some(m)) => m,
            _ => return,
        };
        tracing::info!(member = id, ?kind, "changing a member's role");
        self.propose_member_change(
            MemberChange {
                kind: kind as i32,
                member: Some(member),
                proposer: 0,
                request_id: 0,
            },
            None,
        );
    }

    /// A learner that is caught up and heard from recently; among several, one from the
    /// failure domain with the fewest live voters (voters spread across domains).
    fn ready_standby(&self, learners: &[u64]) -> Option<u64> {
        let raft = &self.raw.raft;
        let last = raft.raft_log.last_index();
        let alive = self.options.tick * (self.options.election_ticks as u32) * 3;
        let domain = |id: u64| self.store.failure_domain(id).unwrap_or(0);
        let voter_domains: Vec<u64> = self
            .raw
            .store()
            .conf_state()
            .voters
            .iter()
            .filter(|id| !self.is_dead(**id))
            .map(|id| domain(*id))
            .collect();
        let ready = learners.iter().copied().filter(|id| {
            // (not `recent_active`: raft resets it every election timeout, in phase with
            // this check)
            let caught_up = raft.prs().get(*id).is_some_and(|pr| {
                pr.state != ProgressState::Snapshot && pr.matched + CAUGHT_UP_LAG >= last
            });
            caught_up && self.peer_health.silence(*id).is_some_and(|s| s < alive)
        });
        ready.min_by_key(|id| {
            let d = domain(*id);
            (voter_domains.iter().filter(|v| **v == d).count(), *id)
        })
    }

    /// A member (other than this one) not heard from for the voter grace period.
    fn is_dead(&self, id: u64) -> bool {
        if id == self.options.id {
            return false;
        }
        let grace = self.options.voter_grace;
        match self.peer_health.silence(id) {
            Some(silence) => silence > grace,
            None => self.started.elapsed() > grace,
        }
    }

    fn fail_all(&mut self) {
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(Error::Stopped));
        }
        for (_, reply) in self.pending_members.drain() {
            let _ = reply.send(Err(Error::Stopped));
        }
        for waiters in self.reads_by_ctx.drain().map(|(_, w)| w) {
            for w in waiters {
                let _ = w.send(Err(Error::Stopped));
            }
        }
        for (_, waiters) in self.reads_waiting_apply.drain(..) {
            for w in waiters {
                let _ = w.send(Err(Error::Stopped));
            }
        }
    }
}
