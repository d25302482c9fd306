//! The watch hub: the apply path publishes each applied revision's events here, and every watch
//! stream receives them by push. The hub never blocks the apply path: a stream that falls behind
//! the broadcast buffer is told it lagged and catches up from the revision table instead.
//!
//! The hub also keeps the most recent revisions ([`RECENT_BYTES`] of them at most), so that a
//! watcher starting a little in the past (kube-apiserver's watch cache, a client resuming)
//! replays from memory instead of the table. Each revision's events are encoded once, on first
//! use, with and without their prev_kv, and those bytes are shared by every watcher that
//! receives them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use prost::Message;
use tokio::sync::broadcast;

use crate::proto::mvccpb::Event;

/// Up to about this many bytes of recent events are kept for replays.
pub const RECENT_BYTES: usize = 4 * 1024 * 1024;

/// All events of one applied revision, in sub-revision order, each with its prev_kv.
#[derive(Debug)]
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Vec<Event>,
    encoded: OnceLock<Vec<EncodedEvent>>,
}

/// One event as sent on the wire: with its prev_kv, and without it.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    pub with_prev: Bytes,
    pub without_prev: Bytes,
}

impl RevisionEvents {
    pub fn new(revision: i64, mut events: Vec<Event>) -> RevisionEvents {
        // The apply path grows `events` one push at a time, so a single put leaves room for
        // four, and the hub keeps thousands of revisions: hold only what is used.
        events.shrink_to_fit();
        RevisionEvents {
            revision,
            events,
            encoded: OnceLock::new(),
        }
    }

    /// The events encoded (once, by whoever asks first), in the order of `events`.
    pub fn encoded(&self) -> &[EncodedEvent] {
        self.encoded.get_or_init(|| {
            self.events
                .iter()
                .map(|e| {
                    let with_prev = Bytes::from(e.encode_to_vec());
                    let without_prev = if e.prev_kv.is_some() {
                        Bytes::from(
                            Event {
                                prev_kv: None,
                                ..e.clone()
                            }
                            .encode_to_vec(),
                        )
                    } else {
                        with_prev.clone()
                    };
                    EncodedEvent {
                        with_prev,
                        without_prev,
                    }
                })
                .collect()
        })
    }

    /// About how many bytes the revision's events take on the wire (keys, values and prev_kvs).
    pub fn payload_bytes(&self) -> usize {
        let kv_len = |kv: &Option<crate::proto::mvccpb::KeyValue>| {
            kv.as_ref()
                .map_or(0, |kv| kv.key.len() + kv.value.len() + 48)
        };
        self.events
            .iter()
            .map(|e| kv_len(&e.kv) + kv_len(&e.prev_kv))
            .sum()
    }

    /// About how much memory the revision holds: its events, and twice more once encoded.
    fn weight(&self) -> usize {
        3 * self.payload_bytes() + 64
    }
}

/// Fan-out of applied events to watch streams.
pub struct WatchHub {
    sender: broadcast::Sender<Arc<RevisionEvents>>,
    last_published: AtomicI64,
    recent: Mutex<Recent>,
}

/// Consecutive recent revisions, oldest first.
#[derive(Default)]
struct Recent {
    revisions: VecDeque<Arc<RevisionEvents>>,
    bytes: usize,
}

impl WatchHub {
    /// A hub whose history starts after `revision` (the store revision at start-up).
    pub fn new(revision: i64, capacity: usize) -> WatchHub {
        let (sender, _) = broadcast::channel(capacity.max(16));
        WatchHub {
            sender,
            last_published: AtomicI64::new(revision),
            recent: Mutex::new(Recent::default()),
        }
    }

    /// Called by the apply path once the revision is in the table. An empty revision tells
    /// streams to catch up from the table (the table was replaced).
    pub fn publish(&self, revision: i64, events: Vec<Event>) {
        let batch = Arc::new(RevisionEvents::new(revision, events));
        self.remember(&batch);
        // Order matters: a subscriber that reads `last_published` >= revision will also find the
        // revision in the table, and drops the live copy it may receive.
        self.last_published.store(revision, Ordering::Release);
        let _no_subscribers_is_fine = self.sender.send(batch);
    }

    fn remember(&self, batch: &Arc<RevisionEvents>) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let follows = recent
            .revisions
            .back()
            .is_none_or(|last| last.revision + 1 == batch.revision);
        if batch.events.is_empty() || !follows {
            *recent = Recent::default();
            if batch.events.is_empty() {
                return;
            }
        }
        recent.bytes += batch.weight();
        recent.revisions.push_back(batch.clone());
        while recent.bytes > RECENT_BYTES && recent.revisions.len() > 1 {
            if let Some(old) = recent.revisions.pop_front() {
                recent.bytes -= old.weight();
            }
        }
    }

    /// Revisions `from..=to`, if all of them are still held in memory.
    pub fn recent(&self, from: i64, to: i64) -> Option<Vec<Arc<RevisionEvents>>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let first = recent.revisions.front()?.revision;
        let last = recent.revisions.back()?.revision;
        if from < first || to > last || from > to {
            return None;
        }
        let start = (from - first) as usize;
        let end = (to - first) as usize;
        Some(recent.revisions.range(start..=end).cloned().collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn put(key: &str, revision: i64, prev: bool) -> Event {
        let kv = |rev| KeyValue {
            key: key.as_bytes().to_vec(),
            mod_revision: rev,
            value: vec![b'v'; 10].into(),
            ..Default::default()
        };
        Event {
            r#type: 0,
            kv: Some(kv(revision)),
            prev_kv: prev.then(|| kv(revision - 1)),
        }
    }

    #[test]
    fn events_are_encoded_once_with_and_without_prev_kv() {
        let batch = RevisionEvents::new(5, vec![put("a", 5, true), put("b", 5, false)]);
        let encoded = batch.encoded();
        assert_eq!(
            Event::decode(encoded[0].with_prev.clone()).unwrap(),
            batch.events[0]
        );
        let bare = Event::decode(encoded[0].without_prev.clone()).unwrap();
        assert!(bare.prev_kv.is_none());
        assert_eq!(bare.kv, batch.events[0].kv);
        assert_eq!(encoded[1].with_prev, encoded[1].without_prev);
        // The second call returns the same bytes (shared, not encoded again).
        assert_eq!(
            batch.encoded()[0].with_prev.as_ptr(),
            encoded[0].with_prev.as_ptr()
        );
    }

    #[test]
    fn recent_revisions_are_kept_consecutive_and_bounded() {
        let hub = WatchHub::new(1, 16);
        for rev in 2..=5 {
            hub.publish(rev, vec![put("k", rev, true)]);
        }
        let got: Vec<i64> = hub
            .recent(3, 5)
            .unwrap()
            .iter()
            .map(|b| b.revision)
            .collect();
        assert_eq!(got, [3, 4, 5]);
        assert!(hub.recent(1, 5).is_none(), "revision 1 was never held");
        assert!(
            hub.recent(4, 6).is_none(),
            "revision 6 is not published yet"
        );
        // The table was replaced: nothing before it can be served from memory.
        hub.publish(9, vec![]);
        assert!(hub.recent(5, 5).is_none());
        hub.publish(10, vec![put("k", 10, false)]);
        assert_eq!(hub.recent(10, 10).unwrap().len(), 1);
        let big = "x".repeat(RECENT_BYTES / 4);
        for rev in 11..=20 {
            hub.publish(rev, vec![put(&big, rev, false)]);
        }
        assert!(hub.recent(11, 20).is_none(), "bounded by RECENT_BYTES");
        assert!(hub.recent(20, 20).is_some());
    }
}
