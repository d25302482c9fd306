//! Watches compared across the two servers. A `Stream2` is one watch stream opened on each server
//! with the same requests; a background task per side records every response, normalised. A
//! watch's transcript is what it received, in order, with events grouped by revision (responses
//! may batch revisions differently; a revision split over two responses is marked) and header
//! revisions of event responses left out (they depend on when the server flushed).
//!
//! Knowing when a watch has received "everything" uses a sentinel: a put and a delete of the
//! watch's own key, which every watch sees (no watch filters both puts and deletes). Once the
//! sentinel's event arrived, everything before it has too, and the transcript is cut there.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, EventType, WatchFilterType, WatchOptions, WatchRequestSender, WatchResponse,
};

use crate::answer::{rev, Kv};
use crate::ops::{del, put};
use crate::pair::Pair;

/// How long a watch may take to deliver an event the oracle already delivered.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What to watch: the same create request goes to both servers.
#[derive(Clone, Debug, Default)]
pub struct WatchSpec {
    pub key: String,
    /// Empty: the single key; `"\0"`: every key from `key` on.
    pub end: String,
    pub start_revision: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
    /// Client-chosen id (0: the server picks).
    pub watch_id: i64,
}

pub fn watch(key: &str) -> WatchSpec {
    WatchSpec {
        key: key.into(),
        ..Default::default()
    }
}

impl WatchSpec {
    pub fn end(mut self, end: &str) -> Self {
        self.end = end.into();
        self
    }
    pub fn prefix(mut self) -> Self {
        self.end = crate::ops::prefix_end(&self.key);
        self
    }
    pub fn through_last_key(self) -> Self {
        self.end("\0")
    }
    pub fn start(mut self, revision: i64) -> Self {
        self.start_revision = revision;
        self
    }
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
    pub fn no_put(mut self) -> Self {
        self.no_put = true;
        self
    }
    pub fn no_delete(mut self) -> Self {
        self.no_delete = true;
        self
    }
    pub fn id(mut self, watch_id: i64) -> Self {
        self.watch_id = watch_id;
        self
    }

    fn options(&self) -> WatchOptions {
        let mut o = WatchOptions::new()
            .with_start_revision(self.start_revision)
            .with_watch_id(self.watch_id);
        if !self.end.is_empty() {
            o = o.with_range(self.end.clone());
        }
        if self.prev_kv {
            o = o.with_prev_key();
        }
        let mut filters = vec![];
        if self.no_put {
            filters.push(WatchFilterType::NoPut);
        }
        if self.no_delete {
            filters.push(WatchFilterType::NoDelete);
        }
        o.with_filters(filters)
    }
}

impl fmt::Display for WatchSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = match self.end.as_str() {
            "" => format!("{:?}", self.key),
            "\0" => format!("[{:?}, from-key)", self.key),
            end => format!("[{:?}, {end:?})", self.key),
        };
        write!(f, "watch {range} start={}", self.start_revision)?;
        for (on, name) in [
            (self.prev_kv, "prev_kv"),
            (self.no_put, "noput"),
            (self.no_delete, "nodelete"),
        ] {
            if on {
                write!(f, " {name}")?;
            }
        }
        if self.watch_id != 0 {
            write!(f, " watch_id={}", self.watch_id)?;
        }
        Ok(())
    }
}

/// One event, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ev {
    pub kind: &'static str,
    pub kv: Kv,
    pub prev_kv: Option<Kv>,
}

/// One watch response, normalised (nothing dropped yet).
#[derive(Clone, Debug)]
pub struct Msg {
    pub watch_id: i64,
    pub created: bool,
    pub canceled: bool,
    pub compact_revision: i64,
    pub cancel_reason: String,
    pub header_rev: Option<i64>,
    pub events: Vec<Ev>,
}

impl Msg {
    fn from_client(r: &WatchResponse) -> Msg {
        let events = r
            .events()
            .iter()
            .map(|e| Ev {
                kind: match e.event_type() {
                    EventType::Put => "PUT",
                    EventType::Delete => "DELETE",
                },
                kv: Kv::from_client(e.kv().expect("event without kv")),
                prev_kv: e.prev_kv().map(Kv::from_client),
            })
            .collect();
        Msg {
            watch_id: r.watch_id(),
            created: r.created(),
            canceled: r.canceled(),
            compact_revision: r.compact_revision(),
            cancel_reason: r.cancel_reason().to_string(),
            header_rev: rev(r.header()),
            events,
        }
    }
}

/// What the reader task saw on one side, in order.
#[derive(Clone, Debug)]
enum Entry {
    Msg(Msg),
    Closed(String),
}

/// One item of a transcript.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// The create answer (also carries a refusal: `canceled` + `cancel_reason`).
    Created {
        watch_id: i64,
        header_rev: Option<i64>,
        canceled: bool,
        cancel_reason: String,
    },
    Canceled {
        watch_id: i64,
        compact_revision: i64,
        cancel_reason: String,
        header_rev: Option<i64>,
    },
    /// The events of one revision, in the order received.
    Revision {
        revision: i64,
        events: Vec<Ev>,
        split_over_responses: bool,
    },
    /// A response with no events that is neither a create nor a cancel (progress).
    Progress {
        watch_id: i64,
        header_rev: Option<i64>,
    },
    /// The stream ended (error text, or "closed").
    Closed(String),
}

/// One side of a `Stream2`: the request sender and what the reader task recorded.
struct Tap {
    sender: WatchRequestSender,
    log: Arc<Mutex<Vec<Entry>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Tap {
    async fn open(client: &Client, spec: &WatchSpec) -> Tap {
        let stream = client
            .watch_client()
            .watch(spec.key.clone(), Some(spec.options()))
            .await
            .unwrap_or_else(|e| panic!("opening `{spec}`: {e}"));
        let (sender, mut responses) = stream.split();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let reader = tokio::spawn(async move {
            loop {
                let entry = match responses.message().await {
                    Ok(Some(r)) => Entry::Msg(Msg::from_client(&r)),
                    Ok(None) => Entry::Closed("closed".into()),
                    Err(e) => Entry::Closed(crate::answer::Answer::error(e).short()),
                };
                let done = matches!(entry, Entry::Closed(_));
                sink.lock().unwrap().push(entry);
                if done {
                    break;
                }
            }
        });
        Tap {
            sender,
            log,
            reader,
        }
    }

    fn entries(&self) -> Vec<Entry> {
        self.log.lock().unwrap().clone()
    }

    /// The ids of the created answers, in order (the n-th create request gets the n-th).
    fn created_ids(&self) -> Vec<i64> {
        self.entries()
            .iter()
            .filter_map(|e| match e {
                Entry::Msg(m) if m.created => Some(m.watch_id),
                _ => None,
            })
            .collect()
    }

    /// Polls until `done` holds for the entries or the timeout passes.
    async fn wait(&self, timeout: Duration, done: impl Fn(&[Entry]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.log.lock().unwrap()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The transcript of the watch with id `id`, events up to revision `upto` (inclusive).
    fn transcript(&self, id: Option<i64>, upto: i64) -> Vec<Item> {
        transcript(&self.entries(), id, upto)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Builds a transcript from the raw entries of one side.
fn transcript(entries: &[Entry], id: Option<i64>, upto: i64) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    for (n, entry) in entries.iter().enumerate() {
        let m = match entry {
            Entry::Closed(why) => {
                items.push(Item::Closed(why.clone()));
                continue;
            }
            Entry::Msg(m) => m,
        };
        let mine = Some(m.watch_id) == id || m.watch_id == -1;
        if !mine {
            continue;
        }
        if m.created {
            items.push(Item::Created {
                watch_id: m.watch_id,
                header_rev: m.header_rev,
                canceled: m.canceled,
                cancel_reason: m.cancel_reason.clone(),
            });
        } else if m.canceled {
            items.push(Item::Canceled {
                watch_id: m.watch_id,
                compact_revision: m.compact_revision,
                cancel_reason: m.cancel_reason.clone(),
                header_rev: m.header_rev,
            });
        } else if m.events.is_empty() {
            items.push(Item::Progress {
                watch_id: m.watch_id,
                header_rev: m.header_rev,
            });
        }
        add_events(&mut items, n, &m.events, upto);
    }
    items
}

/// Appends events (of response number `n`) grouped by revision, dropping those past `upto`.
fn add_events(items: &mut Vec<Item>, n: usize, events: &[Ev], upto: i64) {
    let mut first_in_response = true;
    for ev in events {
        let revision = ev.kv.mod_revision;
        if revision > upto {
            continue;
        }
        match items.last_mut() {
            Some(Item::Revision {
                revision: r,
                events,
                split_over_responses,
            }) if *r == revision => {
                if first_in_response && n > 0 {
                    *split_over_responses = true;
                }
                events.push(ev.clone());
            }
            _ => items.push(Item::Revision {
                revision,
                events: vec![ev.clone()],
                split_over_responses: false,
            }),
        }
        first_in_response = false;
    }
}

/// One watch stream on each server, created with the same requests in the same order.
pub struct Stream2 {
    a: Tap,
    b: Tap,
    /// The specs of the watches created on it, in order.
    pub specs: Vec<WatchSpec>,
}

impl Stream2 {
    /// Opens a stream on both servers with `spec` as its first watch, and waits for both create
    /// answers (a missing one on the subject is reported when transcripts are compared).
    pub async fn open(pair: &Pair, spec: WatchSpec) -> Stream2 {
        let (a, b) = tokio::join!(Tap::open(&pair.a, &spec), Tap::open(&pair.b, &spec));
        let s = Stream2 {
            a,
            b,
            specs: vec![spec],
        };
        s.wait_created(1).await;
        s
    }

    /// Adds another watch on the same streams.
    pub async fn add(&mut self, spec: WatchSpec) {
        let (key, o) = (spec.key.clone(), spec.options());
        let (ra, rb) = tokio::join!(
            self.a.sender.watch(key.clone(), Some(o.clone())),
            self.b.sender.watch(key, Some(o))
        );
        ra.unwrap();
        rb.unwrap();
        self.specs.push(spec);
        self.wait_created(self.specs.len()).await;
    }

    async fn wait_created(&self, n: usize) {
        let created = |e: &[Entry]| {
            e.iter()
                .filter(|e| {
                    matches!(e, Entry::Msg(m) if m.created) || matches!(e, Entry::Closed(_))
                })
                .count()
                >= n
        };
        assert!(
            self.a.wait(DELIVERY_TIMEOUT, created).await,
            "oracle did not answer watch create #{n}"
        );
        self.b.wait(DELIVERY_TIMEOUT, created).await;
    }

    /// Cancels the `n`-th watch (by each side's own id) on both sides and waits for the answers.
    pub async fn cancel(&mut self, n: usize) {
        let (ia, ib) = (self.a.created_ids()[n], self.id_b(n));
        let (ra, rb) = tokio::join!(self.a.sender.cancel(ia), self.b.sender.cancel(ib));
        ra.unwrap();
        rb.unwrap();
        self.wait_canceled(n).await;
    }

    /// Sends a progress request on both streams and waits for the oracle's answer (and up to
    /// the delivery timeout for the subject's).
    pub async fn request_progress(&mut self) {
        let (ra, rb) = tokio::join!(
            self.a.sender.request_progress(),
            self.b.sender.request_progress()
        );
        ra.unwrap();
        rb.unwrap();
        let progress = |e: &[Entry]| {
            e.iter().any(
                |e| matches!(e, Entry::Msg(m) if m.watch_id == -1 && m.events.is_empty() && !m.created),
            )
        };
        assert!(
            self.a.wait(DELIVERY_TIMEOUT, progress).await,
            "oracle: no progress answer"
        );
        self.b.wait(DELIVERY_TIMEOUT, progress).await;
    }

    /// The subject's id of the `n`-th watch (None if it never answered the create).
    fn id_b(&self, n: usize) -> i64 {
        self.b.created_ids().get(n).copied().unwrap_or(i64::MIN)
    }

    /// Waits until the `n`-th watch received an event at `revision` or later (or was canceled,
    /// or the stream closed) on both sides.
    pub async fn wait_revision(&self, n: usize, revision: i64) {
        let a_id = self.a.created_ids()[n];
        let b_id = self.id_b(n);
        let reached = |id: i64| {
            move |entries: &[Entry]| {
                entries.iter().any(|e| match e {
                    Entry::Closed(_) => true,
                    Entry::Msg(m) => {
                        m.watch_id == id
                            && (m.canceled
                                || m.events.iter().any(|e| e.kv.mod_revision >= revision))
                    }
                })
            }
        };
        let (ok_a, _) = tokio::join!(
            self.a.wait(DELIVERY_TIMEOUT, reached(a_id)),
            self.b.wait(DELIVERY_TIMEOUT, reached(b_id))
        );
        assert!(
            ok_a,
            "oracle: watch `{}` never reached revision {revision}",
            self.specs[n]
        );
    }

    /// Waits until the `n`-th watch was canceled (or the stream closed) on both sides.
    pub async fn wait_canceled(&self, n: usize) {
        let a_id = self.a.created_ids()[n];
        let b_id = self.id_b(n);
        let canceled = |id: i64| {
            move |entries: &[Entry]| {
                entries.iter().any(|e| match e {
                    Entry::Closed(_) => true,
                    Entry::Msg(m) => m.watch_id == id && m.canceled,
                })
            }
        };
        let (ok_a, _) = tokio::join!(
            self.a.wait(DELIVERY_TIMEOUT, canceled(a_id)),
            self.b.wait(DELIVERY_TIMEOUT, canceled(b_id))
        );
        assert!(ok_a, "oracle: watch `{}` was not canceled", self.specs[n]);
    }

    /// Whether the oracle canceled the `n`-th watch (then no sentinel will ever reach it).
    pub fn oracle_canceled(&self, n: usize) -> bool {
        let id = self.a.created_ids()[n];
        self.a.entries().iter().any(|e| match e {
            Entry::Msg(m) => m.watch_id == id && m.canceled,
            Entry::Closed(_) => true,
        })
    }

    /// Puts and deletes the `n`-th watch's key (compared like any operation) and waits until the
    /// watch saw the sentinel; returns the revision of the sentinel delete.
    pub async fn sentinel(&self, pair: &mut Pair, n: usize) -> i64 {
        let spec = self.specs[n].clone();
        let put_rev = pair.rev(put(&spec.key, "sentinel")).await;
        let del_rev = pair.rev(del(&spec.key)).await;
        if !self.oracle_canceled(n) {
            let seen = if spec.no_delete { put_rev } else { del_rev };
            self.wait_revision(n, seen).await;
        }
        del_rev
    }

    /// Compares the transcripts of the `n`-th watch up to revision `upto`.
    pub fn compare(&self, pair: &mut Pair, n: usize, upto: i64) {
        let a = self
            .a
            .transcript(self.a.created_ids().get(n).copied(), upto);
        let b = self
            .b
            .transcript(self.b.created_ids().get(n).copied(), upto);
        pair.check_list(
            &format!("events of `{}` up to revision {upto}", self.specs[n]),
            &a,
            &b,
        );
    }

    /// Sentinel, then comparison, for every watch on the stream.
    pub async fn settle_and_compare(&self, pair: &mut Pair) {
        for n in 0..self.specs.len() {
            let upto = self.sentinel(pair, n).await;
            self.compare(pair, n, upto);
        }
    }
}
