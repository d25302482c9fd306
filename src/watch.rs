//! The watch hub: the apply path publishes each applied revision's events here, and every watch
//! stream receives them by push. The hub never blocks the apply path: a stream that falls behind
//! the broadcast buffer is told it lagged and catches up from the revision table instead.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::proto::mvccpb::Event;

/// All events of one applied revision, in sub-revision order, each with its prev_kv.
#[derive(Debug)]
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// Fan-out of applied events to watch streams.
pub struct WatchHub {
    sender: broadcast::Sender<Arc<RevisionEvents>>,
    last_published: AtomicI64,
}

impl WatchHub {
    /// A hub whose history starts after `revision` (the store revision at start-up).
    pub fn new(revision: i64, capacity: usize) -> WatchHub {
        let (sender, _) = broadcast::channel(capacity.max(16));
        WatchHub {
            sender,
            last_published: AtomicI64::new(revision),
        }
    }

    /// Called by the apply path once the revision is durable in the table.
    pub fn publish(&self, revision: i64, events: Vec<Event>) {
        // Order matters: a subscriber that reads `last_published` >= revision will also find the
        // revision in the table, and drops the live copy it may receive.
        self.last_published.store(revision, Ordering::Release);
        let _no_subscribers_is_fine = self
            .sender
            .send(Arc::new(RevisionEvents { revision, events }));
    }

    /// A live feed, and the last revision published before it began: the subscriber reads the
    /// table up to that revision, then takes only newer revisions from the feed.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<RevisionEvents>>, i64) {
        let receiver = self.sender.subscribe();
        (receiver, self.last_published.load(Ordering::Acquire))
    }

    pub fn last_published(&self) -> i64 {
        self.last_published.load(Ordering::Acquire)
    }

    /// Number of live watch streams.
    pub fn streams(&self) -> usize {
        self.sender.receiver_count()
    }
}
