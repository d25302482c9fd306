//! The raft thread: owns the `RawNode`, turns proposals into log entries, makes them durable
//! (one sled flush per Ready: group commit), applies committed entries through `Store::apply`,
//! publishes their events to the watch hub and answers the proposers — in that order.
//!
//! Linearizable reads ask for a ReadIndex; all reads waiting in one loop turn share one request,
//! and each is released once the applied index reaches the read index.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeV2, Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use tokio::sync::oneshot;

use super::log_store::LogStore;
use super::logger::raft_logger;
use crate::command::{Command, Op};
use crate::error::{Error, Result};
use crate::lease::Lessor;
use crate::store::{Applied, Store};
use crate::watch::WatchHub;

/// Settings of the raft group.
#[derive(Clone, Debug)]
pub struct RaftOptions {
    /// This member's raft id (never 0).
    pub id: u64,
    /// Voters of a brand-new cluster.
    pub initial_voters: Vec<u64>,
    /// Heartbeat interval (one raft tick).
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Proposals larger than this are refused (etcd's --max-request-bytes).
    pub max_request_bytes: usize,
    /// Applied entries kept in the log before it is compacted.
    pub log_retention: u64,
}

/// What the rest of the node may read about raft without asking the thread.
#[derive(Default, Debug)]
pub struct RaftStatus {
    pub leader: AtomicU64,
    pub term: AtomicU64,
    pub commit_index: AtomicU64,
    pub applied_index: AtomicU64,
    pub is_leader: AtomicBool,
    pub stopped: AtomicBool,
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

enum Request {
    Propose {
        op: Op,
        reply: oneshot::Sender<Result<Applied>>,
    },
    Read {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// The handle the node uses to talk to the raft thread.
pub struct RaftHandle {
    requests: mpsc::Sender<Request>,
    pub status: Arc<RaftStatus>,
    thread: Option<JoinHandle<()>>,
}

impl RaftHandle {
    /// Starts the raft thread over the store's database.
    pub fn start(
        options: RaftOptions,
        store: Arc<Store>,
        hub: Arc<WatchHub>,
        lessor: Arc<Lessor>,
    ) -> Result<RaftHandle> {
        let log = LogStore::open(store.db(), &options.initial_voters)?;
        let config = raft::Config {
            id: options.id,
            election_tick: options.election_ticks,
            heartbeat_tick: 1,
            applied: store.applied_index(),
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        config.validate()?;
        let raw = RawNode::new(&config, log, &raft_logger())?;
        let status = Arc::new(RaftStatus::default());
        let (requests, inbox) = mpsc::channel();
        let mut worker = Worker {
            raw,
            options,
            store,
            hub,
            lessor,
            status: status.clone(),
            inbox,
            pending: HashMap::new(),
            next_request_id: 1,
            reads_unsent: vec![],
            reads_by_ctx: HashMap::new(),
            reads_waiting_apply: vec![],
            next_read_ctx: 1,
            was_leader: false,
        };
        worker.campaign_if_alone()?;
        let thread = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || worker.run())?;
        Ok(RaftHandle {
            requests,
            status,
            thread: Some(thread),
        })
    }

    /// Proposes a command and waits until it is applied (or fails).
    pub async fn propose(&self, op: Op) -> Result<Applied> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Propose { op, reply })
            .map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)?
    }

    /// Waits until this member has applied everything committed when the call was made.
    pub async fn read_index(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Read { reply })
            .map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)?
    }

    /// Stops the thread after the requests already queued (pending ones fail with `Stopped`).
    pub fn stop(&mut self) {
        self.status.stopped.store(true, Ordering::Release);
        // Dropping our sender alone does not end the loop while clones exist; the flag does.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RaftHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Worker {
    raw: RawNode<LogStore>,
    options: RaftOptions,
    store: Arc<Store>,
    hub: Arc<WatchHub>,
    lessor: Arc<Lessor>,
    status: Arc<RaftStatus>,
    inbox: mpsc::Receiver<Request>,
    /// Proposals of this member waiting to be applied, by request id.
    pending: HashMap<u64, oneshot::Sender<Result<Applied>>>,
    next_request_id: u64,
    /// Reads received this turn, not yet given a ReadIndex request.
    reads_unsent: Vec<oneshot::Sender<Result<()>>>,
    reads_by_ctx: HashMap<Vec<u8>, Vec<oneshot::Sender<Result<()>>>>,
    /// (read index, waiters) until applied reaches the index.
    reads_waiting_apply: Vec<(u64, Vec<oneshot::Sender<Result<()>>>)>,
    next_read_ctx: u64,
    was_leader: bool,
}

/// At most this many requests are taken from the inbox per loop turn (bounds Ready size).
const MAX_REQUESTS_PER_TURN: usize = 4096;

impl Worker {
    fn run(mut self) {
        let mut last_tick = Instant::now();
        while !self.status.stopped.load(Ordering::Acquire) {
            let wait = self.options.tick.saturating_sub(last_tick.elapsed());
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
            self.send_reads();
            if last_tick.elapsed() >= self.options.tick {
                self.raw.tick();
                last_tick = Instant::now();
            }
            if let Err(e) = self.on_ready() {
                tracing::error!("raft loop stopped: {e}");
                break;
            }
        }
        self.fail_all();
        let _ = self.store.flush();
    }

    fn campaign_if_alone(&mut self) -> Result<()> {
        let cs = self.raw.store().conf_state();
        if cs.voters == [self.options.id] && self.raw.raft.state != StateRole::Leader {
            self.raw.campaign()?;
        }
        Ok(())
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Propose { op, reply } => self.propose(op, reply),
            Request::Read { reply } => self.reads_unsent.push(reply),
        }
    }

    fn propose(&mut self, op: Op, reply: oneshot::Sender<Result<Applied>>) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
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
                let _ = reply.send(Err(Error::NoLeader));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Raft(e)));
            }
        }
    }

    fn send_reads(&mut self) {
        if self.reads_unsent.is_empty() {
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
            return Err(Error::Corrupt(
                "received a raft snapshot; snapshot install is not available yet".into(),
            ));
        }
        self.apply_entries(ready.take_committed_entries())?;
        let mut must_flush = false;
        if !ready.entries().is_empty() {
            self.raw.store().append(ready.entries())?;
            must_flush = true;
        }
        if let Some(hs) = ready.hs() {
            self.raw.store().set_hard_state(hs)?;
            must_flush = true;
        }
        if must_flush || ready.must_sync() {
            self.store.flush()?;
        }
        for rs in ready.take_read_states() {
            if let Some(waiters) = self.reads_by_ctx.remove(&rs.request_ctx) {
                self.reads_waiting_apply.push((rs.index, waiters));
            }
        }
        if let Some(ss) = ready.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state);
        }
        self.send_messages(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.store().set_commit(commit)?;
        }
        self.send_messages(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.release_reads();
        self.publish_status();
        self.compact_log()?;
        Ok(())
    }

    fn send_messages(&mut self, messages: Vec<Message>) {
        // A group of one has no peers; peer transport arrives with replication.
        if !messages.is_empty() {
            tracing::debug!(
                "dropping {} raft messages: no peer transport",
                messages.len()
            );
        }
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        self.status.leader.store(leader, Ordering::Release);
        let is_leader = role == StateRole::Leader;
        self.status.is_leader.store(is_leader, Ordering::Release);
        if is_leader && !self.was_leader {
            let election = self.options.tick * self.options.election_ticks as u32;
            self.lessor.promote(election);
            tracing::info!(term = self.raw.raft.term, "became leader");
        }
        if !is_leader && self.was_leader {
            // Proposals in flight may never commit under another leader: fail them promptly.
            for (_, reply) in self.pending.drain() {
                let _ = reply.send(Err(Error::NoLeader));
            }
        }
        self.was_leader = is_leader;
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<()> {
        for entry in entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&entry)?,
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|e| Error::Corrupt(format!("conf change: {e}")))?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.raw.store().set_conf_state(&cs)?;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|e| Error::Corrupt(format!("conf change: {e}")))?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.raw.store().set_conf_state(&cs)?;
                }
            }
            self.status
                .applied_index
                .store(entry.index, Ordering::Release);
        }
        Ok(())
    }

    fn apply_normal(&mut self, entry: &Entry) -> Result<()> {
        if entry.data.is_empty() {
            return Ok(()); // a new leader's empty entry
        }
        if entry.index <= self.store.applied_index() {
            return Ok(()); // already in the table (replay after restart)
        }
        let cmd = Command::decode_entry(&entry.data)?;
        let answer = self.store.apply(entry.index, &cmd)?;
        if let Ok(applied) = &answer {
            if !applied.lease_effects.is_empty() {
                self.lessor.on_applied(&applied.lease_effects);
            }
            if !applied.events.is_empty() {
                self.hub.publish(applied.revision, applied.events.clone());
            }
        }
        if cmd.proposer == self.options.id {
            if let Some(reply) = self.pending.remove(&cmd.request_id) {
                let _ = reply.send(answer);
            }
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

    fn publish_status(&self) {
        let raft = &self.raw.raft;
        self.status.term.store(raft.term, Ordering::Release);
        self.status
            .commit_index
            .store(raft.raft_log.committed, Ordering::Release);
        self.status.leader.store(raft.leader_id, Ordering::Release);
    }

    fn compact_log(&mut self) -> Result<()> {
        let applied = self.store.applied_index();
        let first = self.raw.store().first_index_now();
        let retention = self.options.log_retention.max(1);
        if applied > first + 2 * retention {
            self.raw.store().compact(applied - retention)?;
        }
        Ok(())
    }

    fn fail_all(&mut self) {
        for (_, reply) in self.pending.drain() {
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
