//! etcd's Watch service. Each gRPC stream is one task holding its watchers. It takes applied
//! revisions from the watch hub (push, never polling) and replays history (a start revision in
//! the past, or catching up after falling behind the hub's buffer) from the hub's recent
//! revisions or, further back, from the table. Events go out as the hub encoded them, once per
//! revision for all watchers.
//!
//! A stream that is behind (several revisions already waiting in its feed, or a catch-up)
//! sends each watcher one response for a group of consecutive revisions
//! ([`GROUP_REVISIONS`], about [`GROUP_BYTES`]) instead of one per revision, as etcd does for
//! its unsynced watchers: fewer, larger messages cost both sides less per event. A stream that
//! keeps up still sends each revision as soon as it is applied.
//!
//! Invariant: `synced` is the revision up to which every watcher of the stream has been sent
//! everything; progress answers carry it, so a progress reply never overtakes events it covers.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::require_leader_if_asked;
use crate::error::Error;
use crate::node::Node;
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::{
    watch_request::RequestUnion, watch_server::Watch, WatchCancelRequest, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use crate::proto::mvccpb::event::EventType;
use crate::store::KeyRange;
use crate::watch::RevisionEvents;

/// At most this many revisions of history go into one catch-up response (etcd's batch size).
const CATCH_UP_REVISIONS: i64 = 1000;

/// At most this many revisions go into one response when a stream is behind.
const GROUP_REVISIONS: usize = 256;

/// A group stops growing once its events hold about this many bytes (well under the 4 MiB a
/// tonic client accepts by default).
const GROUP_BYTES: usize = 1 << 20;

/// Responses a stream may have waiting to be encoded before its task waits for the client
/// (etcd's server keeps 128). Each waiting catch-up response holds its events' handles, so
/// 10,000 watchers catching up on 10 streams peaked 0.3-0.7 MiB higher with 256, and the
/// fan-out of the watch benchmark did not move between the two (bench/README.md, session 11).
const PENDING_RESPONSES: usize = 64;

pub struct WatchService {
    node: Arc<Node>,
}

impl WatchService {
    pub fn new(node: Arc<Node>) -> WatchService {
        WatchService { node }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        require_leader_if_asked(&self.node, &request)?;
        let incoming = request.into_inner();
        let (out, responses) = mpsc::channel(PENDING_RESPONSES);
        let (feed, synced) = self.node.hub.subscribe();
        let stream = WatchStream {
            node: self.node.clone(),
            out,
            feed,
            watchers: BTreeMap::new(),
            next_id: 0,
            synced,
            held: None,
            counted: 0,
        };
        tokio::spawn(stream.run(incoming));
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }
}

/// The client went away.
struct Closed;

struct Watcher {
    range: KeyRange,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
    /// Events of this revision and later are still to be sent.
    next_rev: i64,
    /// Something was sent since the last progress tick.
    sent_since_tick: bool,
}

impl Watcher {
    /// Adds to `selected` the encoded events of `batch` this watcher wants, as it wants them.
    fn select_into(&self, batch: &RevisionEvents, selected: &mut Vec<Bytes>) {
        for (i, e) in batch.events.iter().enumerate() {
            let is_put = e.r#type == EventType::Put as i32;
            let key = e.kv.as_ref().map(|kv| kv.key.as_slice()).unwrap_or(&[]);
            let wanted =
                self.range.contains(key) && !(is_put && self.no_put) && (is_put || !self.no_delete);
            if !wanted {
                continue;
            }
            // Encoded on first use, by whichever watcher wants an event of the batch first.
            let Some(encoded) = batch.encoded().get(i) else {
                continue;
            };
            selected.push(if self.prev_kv {
                encoded.with_prev.clone()
            } else {
                encoded.without_prev.clone()
            });
        }
    }
}

struct WatchStream {
    node: Arc<Node>,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    /// Applied revisions from the hub.
    feed: broadcast::Receiver<Arc<crate::watch::RevisionEvents>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    synced: i64,
    /// A revision taken from the feed while grouping that starts the next group.
    held: Option<Arc<RevisionEvents>>,
    /// This stream's watchers as last added to the `raftkine_watchers` gauge.
    counted: i64,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        crate::metrics::metrics().watchers.sub(self.counted);
    }
}

impl WatchStream {
    async fn run(mut self, mut incoming: Streaming<WatchRequest>) {
        let mut progress = tokio::time::interval(self.node.config.watch_progress_notify_interval);
        progress.tick().await;
        loop {
            let step = if let Some(held) = self.held.take() {
                self.on_batch(held).await
            } else {
                tokio::select! {
                    req = incoming.message() => match req {
                        Ok(Some(req)) => self.on_request(req).await,
                        Ok(None) | Err(_) => Err(Closed),
                    },
                    batch = self.feed.recv() => match batch {
                        Ok(batch) => self.on_batch(batch).await,
                        Err(RecvError::Lagged(_)) => self.catch_up_all().await,
                        Err(RecvError::Closed) => Err(Closed),
                    },
                    _ = progress.tick() => self.progress_tick().await,
                    _ = self.out.closed() => Err(Closed),
                }
            };
            self.count_watchers();
            if step.is_err() {
                return;
            }
        }
    }

    /// An applied revision from the hub, with the consecutive ones already waiting behind it
    /// (see the module doc). A gap before it (a snapshot was installed) or an empty batch (the
    /// hub's "catch up" signal) is filled from the table.
    async fn on_batch(&mut self, batch: Arc<RevisionEvents>) -> Result<(), Closed> {
        if batch.revision <= self.synced {
            return Ok(());
        }
        if batch.events.is_empty() || batch.revision > self.synced + 1 {
            return self.catch_up_to(batch.revision).await;
        }
        let mut bytes = batch.payload_bytes();
        let mut last = batch.revision;
        let mut group = vec![batch];
        let mut lagged = false;
        while !group_is_full(group.len(), bytes) {
            match self.feed.try_recv() {
                Ok(next) if !next.events.is_empty() && next.revision == last + 1 => {
                    bytes += next.payload_bytes();
                    last = next.revision;
                    group.push(next);
                }
                Ok(next) => {
                    if next.revision > last || next.events.is_empty() {
                        self.held = Some(next);
                    }
                    break;
                }
                Err(TryRecvError::Lagged(_)) => {
                    lagged = true;
                    break;
                }
                // Closed shows up again at the next recv.
                Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => break,
            }
        }
        let lag = self.node.hub.last_published() - last;
        crate::metrics::metrics()
            .watch_lag
            .observe(lag.max(0) as f64);
        self.deliver(&group).await?;
        self.synced = last;
        if lagged {
            self.catch_up_all().await?;
        }
        Ok(())
    }

    /// Revisions `from..=to`: from the hub's recent ones, or from the table. (The events of
    /// the compaction revision itself come from the table: their prev_kv, below it, is gone, and
    /// etcd sends them without.)
    fn history(&self, from: i64, to: i64) -> Result<Vec<Arc<RevisionEvents>>, Error> {
        let compacted = self.node.store.compact_revision();
        if from < compacted {
            return Err(Error::Compacted);
        }
        if from > compacted {
            if let Some(held) = self.node.hub.recent(from, to) {
                return Ok(held);
            }
        }
        let mut by_revision: BTreeMap<i64, Vec<_>> = BTreeMap::new();
        for (rev, e) in self.node.store.events_between(from, to)? {
            by_revision.entry(rev).or_default().push(e);
        }
        Ok(by_revision
            .into_iter()
            .map(|(rev, events)| Arc::new(RevisionEvents::new(rev, events)))
            .collect())
    }

    /// Delivers every revision already published, without waiting for more.
    async fn drain_feed(&mut self) -> Result<(), Closed> {
        loop {
            if let Some(held) = self.held.take() {
                self.on_batch(held).await?;
                continue;
            }
            match self.feed.try_recv() {
                Ok(batch) => self.on_batch(batch).await?,
                Err(TryRecvError::Lagged(_)) => self.catch_up_all().await?,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Closed) => return Err(Closed),
            }
        }
    }

    /// Brings the `raftkine_watchers` gauge in line with this stream's watchers.
    fn count_watchers(&mut self) {
        let now = self.watchers.len() as i64;
        if now != self.counted {
            crate::metrics::metrics().watchers.add(now - self.counted);
            self.counted = now;
        }
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), Closed> {
        self.out.send(Ok(resp)).await.map_err(|_| Closed)
    }

    fn response(&self, watch_id: i64, revision: i64) -> WatchResponse {
        WatchResponse {
            header: Some(self.node.header(revision)),
            watch_id,
            ..Default::default()
        }
    }

    async fn on_request(&mut self, req: WatchRequest) -> Result<(), Closed> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })) => {
                if self.watchers.remove(&watch_id).is_some() {
                    let mut resp = self.response(watch_id, self.synced);
                    resp.canceled = true;
                    self.send(resp).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // First send what is already applied (a write acknowledged before this request
                // must be covered), then report `synced`: every watcher has all events up to it.
                self.drain_feed().await?;
                self.send(self.response(-1, self.synced)).await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: WatchCreateRequest) -> Result<(), Closed> {
        let id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                let mut resp = self.response(-1, self.synced);
                resp.created = true;
                resp.canceled = true;
                resp.cancel_reason = "mvcc: duplicate watch ID provided on the WatchStream".into();
                return self.send(resp).await;
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        };
        let key = if c.key.is_empty() {
            vec![0]
        } else {
            c.key.clone()
        };
        let start = if c.start_revision > 0 {
            c.start_revision
        } else {
            self.synced + 1
        };
        let watcher = Watcher {
            range: KeyRange::new(&key, &c.range_end),
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: c.progress_notify,
            fragment: c.fragment,
            next_rev: start,
            sent_since_tick: false,
        };
        let mut created = self.response(id, self.synced);
        created.created = true;
        self.send(created).await?;
        self.watchers.insert(id, watcher);
        if start <= self.synced {
            self.replay(id, start).await?;
        }
        Ok(())
    }

    /// Sends watcher `id` the history from `from` up to `synced`.
    async fn replay(&mut self, id: i64, from: i64) -> Result<(), Closed> {
        let mut from = from;
        while from <= self.synced {
            let to = (from + CATCH_UP_REVISIONS - 1).min(self.synced);
            let history = match self.history(from, to) {
                Ok(h) => h,
                Err(Error::Compacted) => return self.cancel_compacted(id).await,
                Err(e) => {
                    tracing::error!("watch replay: {e}");
                    return Err(Closed);
                }
            };
            let Some(w) = self.watchers.get_mut(&id) else {
                return Ok(());
            };
            let mut selected = vec![];
            for batch in &history {
                w.select_into(batch, &mut selected);
            }
            w.next_rev = to + 1;
            if !selected.is_empty() {
                w.sent_since_tick = true;
                let fragment = w.fragment;
                self.send_events(id, self.synced, selected, fragment)
                    .await?;
            }
            from = to + 1;
        }
        Ok(())
    }

    /// etcd's answer to a watcher whose history is compacted away: canceled, with the
    /// compaction revision, a header without revision and no reason text.
    async fn cancel_compacted(&mut self, id: i64) -> Result<(), Closed> {
        self.watchers.remove(&id);
        let mut resp = self.response(id, 0);
        resp.compact_revision = self.node.store.compact_revision();
        resp.canceled = true;
        self.send(resp).await
    }

    /// The events of consecutive revisions to every watcher that wants them: one response per
    /// watcher, whose header carries the last revision of the group.
    async fn deliver(&mut self, group: &[Arc<RevisionEvents>]) -> Result<(), Closed> {
        let Some(header_rev) = group.last().map(|b| b.revision) else {
            return Ok(());
        };
        // One watcher at a time, selected and then sent: a stream that lagged gets groups of
        // hundreds of revisions, and holding every watcher's selection until the last one is
        // made held hundreds of event handles per watcher beyond what waits in the channel.
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let Some(w) = self.watchers.get_mut(&id) else {
                continue;
            };
            let mut selected = vec![];
            for batch in group {
                if w.next_rev > batch.revision {
                    continue;
                }
                w.select_into(batch, &mut selected);
            }
            w.next_rev = w.next_rev.max(header_rev + 1);
            if selected.is_empty() {
                continue;
            }
            w.sent_since_tick = true;
            let fragment = w.fragment;
            self.send_events(id, header_rev, selected, fragment).await?;
        }
        Ok(())
    }

    /// After lagging behind the hub: replay from the table everything up to the hub's last revision.
    async fn catch_up_all(&mut self) -> Result<(), Closed> {
        crate::metrics::metrics().watch_catch_ups.inc();
        let target = self.node.hub.last_published();
        self.catch_up_to(target).await
    }

    /// Replays from the table every revision after `synced` up to `target`.
    async fn catch_up_to(&mut self, target: i64) -> Result<(), Closed> {
        while self.synced < target {
            let from = self.synced + 1;
            let to = (from + CATCH_UP_REVISIONS - 1).min(target);
            let history = match self.history(from, to) {
                Ok(h) => h,
                Err(Error::Compacted) => {
                    let ids: Vec<i64> = self.watchers.keys().copied().collect();
                    for id in ids {
                        self.cancel_compacted(id).await?;
                    }
                    self.synced = target;
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!("watch catch-up: {e}");
                    return Err(Closed);
                }
            };
            for group in groups(&history) {
                self.deliver(group).await?;
            }
            self.synced = to;
        }
        Ok(())
    }

    /// One response, or several marked `fragment` when the watcher allows it and it is too large.
    async fn send_events(
        &self,
        id: i64,
        revision: i64,
        events: Vec<Bytes>,
        fragment: bool,
    ) -> Result<(), Closed> {
        let limit = self.node.config.max_request_bytes;
        if !fragment || events.iter().map(Bytes::len).sum::<usize>() <= limit {
            let mut resp = self.response(id, revision);
            resp.events = events;
            return self.send(resp).await;
        }
        let mut chunks: Vec<Vec<Bytes>> = vec![vec![]];
        let mut size = 0;
        for e in events {
            let len = e.len();
            if size + len > limit && chunks.last().is_some_and(|c| !c.is_empty()) {
                chunks.push(vec![]);
                size = 0;
            }
            size += len;
            if let Some(last) = chunks.last_mut() {
                last.push(e);
            }
        }
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut resp = self.response(id, revision);
            resp.events = chunk;
            resp.fragment = i + 1 < n;
            self.send(resp).await?;
        }
        Ok(())
    }

    /// Periodic progress notifications to idle watchers that asked for them.
    async fn progress_tick(&mut self) -> Result<(), Closed> {
        let mut due = vec![];
        for (id, w) in self.watchers.iter_mut() {
            if w.progress_notify && !w.sent_since_tick {
                due.push(*id);
            }
            w.sent_since_tick = false;
        }
        for id in due {
            self.send(self.response(id, self.synced)).await?;
        }
        Ok(())
    }
}

/// Whether a group of `revisions` holding `bytes` takes no more revisions.
fn group_is_full(revisions: usize, bytes: usize) -> bool {
    revisions >= GROUP_REVISIONS || bytes >= GROUP_BYTES
}

/// Consecutive runs of `history` within the group limits (see the module doc).
fn groups(history: &[Arc<RevisionEvents>]) -> Vec<&[Arc<RevisionEvents>]> {
    let mut out = vec![];
    let mut start = 0;
    let mut bytes = 0;
    for (i, batch) in history.iter().enumerate() {
        if i > start && group_is_full(i - start, bytes) {
            out.push(&history[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += batch.payload_bytes();
    }
    if start < history.len() {
        out.push(&history[start..]);
    }
    out
}
