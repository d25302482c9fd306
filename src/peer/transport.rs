//! Outbound raft messages: one task per peer holds a client stream of the Peer.Raft call and
//! forwards what the raft thread queues. Sending never blocks the raft thread: a full queue drops
//! the message (raft retransmits) and reports the peer unreachable. A stream that ends (the
//! peer's process or connection went away) is reported as lost, so that a follower whose leader
//! died need not wait out a whole election timeout to notice. A link that lost its peer
//! reconnects every 50–100 ms (etcd's peer streams retry every 100 ms): a restarted follower
//! says nothing until its leader reaches it, so this bounds how long it waits to hear from its
//! leader after it is up. A peer that opens a stream to us cuts the wait short.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::Message;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;

use super::connect;
use crate::proto::raftkinepb::{peer_client::PeerClient, RaftMessage};

const QUEUE: usize = 4096;

/// The longest wait between two attempts to reach a peer.
const RECONNECT_MAX: Duration = Duration::from_millis(100);

struct Link {
    addr: String,
    queue: mpsc::Sender<RaftMessage>,
    /// Ends the link's reconnect backoff.
    wake: Arc<Notify>,
}

/// Peer ids the link tasks report until the raft thread takes them, each once.
#[derive(Default)]
struct PeerIds(Mutex<Vec<u64>>);

impl PeerIds {
    fn add(&self, id: u64) {
        let mut ids = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The raft thread's way out.
pub struct Transport {
    links: Mutex<HashMap<u64, Link>>,
    unreachable: PeerIds,
    lost: PeerIds,
    tls: Arc<rustls::ClientConfig>,
    runtime: tokio::runtime::Handle,
}

impl Transport {
    pub fn new(tls: Arc<rustls::ClientConfig>, runtime: tokio::runtime::Handle) -> Arc<Transport> {
        Arc::new(Transport {
            links: Mutex::new(HashMap::new()),
            unreachable: PeerIds::default(),
            lost: PeerIds::default(),
            tls,
            runtime,
        })
    }

    /// Starts (or re-targets) the link to peer `id` at `addr` (host:port).
    pub fn set_peer(self: &Arc<Self>, id: u64, addr: &str) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if links.get(&id).is_some_and(|l| l.addr == addr) {
            return;
        }
        let (queue, outbox) = mpsc::channel(QUEUE);
        let wake = Arc::new(Notify::new());
        links.insert(
            id,
            Link {
                addr: addr.to_string(),
                queue,
                wake: wake.clone(),
            },
        );
        let this = Arc::downgrade(self);
        let addr = addr.to_string();
        self.runtime.spawn(run_link(this, id, addr, outbox, wake));
    }

    /// Peer `id` is reachable again (it opened a stream to us): a link waiting to reconnect to
    /// it tries now. (A link that is connected keeps the wake-up for its next disconnect, which
    /// then retries once without waiting.)
    pub fn reconnect_now(&self, id: u64) {
        if let Some(link) = self
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            link.wake.notify_one();
        }
    }

    pub fn remove_peer(&self, id: u64) {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    pub fn peers(&self) -> Vec<u64> {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Queues messages for their peers.
    pub fn send(&self, messages: Vec<Message>) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        for m in messages {
            let to = m.to;
            let Some(link) = links.get(&to) else {
                tracing::debug!(to, "raft message for an unknown peer dropped");
                continue;
            };
            let bytes = match m.write_to_bytes() {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("encoding raft message: {e}");
                    continue;
                }
            };
            if link.queue.try_send(RaftMessage { message: bytes }).is_err() {
                self.unreachable.add(to);
            }
        }
    }

    /// Peers that failed since the last call (for `RawNode::report_unreachable`).
    pub fn take_unreachable(&self) -> Vec<u64> {
        self.unreachable.take()
    }

    /// Peers whose open stream ended since the last call.
    pub fn take_lost(&self) -> Vec<u64> {
        self.lost.take()
    }

    fn still_current(&self, id: u64, addr: &str) -> bool {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .is_some_and(|l| l.addr == addr)
    }
}

/// Keeps one Peer.Raft stream open to `addr` while the link exists.
async fn run_link(
    transport: std::sync::Weak<Transport>,
    id: u64,
    addr: String,
    mut outbox: mpsc::Receiver<RaftMessage>,
    wake: Arc<Notify>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(t) = transport.upgrade() else { return };
        if !t.still_current(id, &addr) {
            return;
        }
        let tls = t.tls.clone();
        drop(t);
        match connect::channel(&addr, tls).await {
            Ok(channel) => {
                backoff = Duration::from_millis(50);
                let (tx, rx) = mpsc::channel::<RaftMessage>(QUEUE);
                let mut client = PeerClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX);
                let call = client.raft(ReceiverStream::new(rx));
                tokio::pin!(call);
                loop {
                    tokio::select! {
                        result = &mut call => {
                            if let Err(e) = result {
                                tracing::debug!(peer = id, "raft stream ended: {e}");
                            }
                            break;
                        }
                        next = outbox.recv() => match next {
                            Some(m) => {
                                if tx.send(m).await.is_err() {
                                    break;
                                }
                            }
                            None => return,
                        }
                    }
                }
                if let Some(t) = transport.upgrade() {
                    t.lost.add(id);
                }
            }
            Err(e) => tracing::debug!(peer = id, "{e}"),
        }
        if let Some(t) = transport.upgrade() {
            t.unreachable.add(id);
        }
        // Drop what queued up while disconnected: raft resends what matters.
        while outbox.try_recv().is_ok() {}
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = wake.notified() => {}
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}
