//! Automatic compaction for clients that do not compact (kube-apiserver compacts by itself, so
//! it is off by default), with etcd's `--auto-compaction-mode` / `--auto-compaction-retention`
//! semantics:
//!
//! - `periodic` (retention a duration, or a bare number of hours): revisions are sampled every
//!   tenth of `min(retention, 1h)`; every `min(retention, 1h)` the store is compacted to the
//!   revision it had `retention` ago.
//! - `revision` (retention a number of revisions): every 5 minutes the store is compacted to
//!   `current revision - retention`.
//!
//! Only the leader proposes; the compaction is an ordinary command through raft.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::command::Op;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::proto::etcdserverpb::CompactionRequest;

/// etcd's revision-mode check interval.
const REVISION_INTERVAL: Duration = Duration::from_secs(300);
const HOUR: Duration = Duration::from_secs(3600);

/// What `--auto-compaction-mode` and `--auto-compaction-retention` ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Off,
    Periodic(Duration),
    Revisions(i64),
}

impl Policy {
    /// Parses the two flags as etcd does ("0" turns compaction off).
    pub fn parse(mode: &str, retention: &str) -> Result<Policy> {
        let retention = retention.trim();
        let bad = |why: &str| {
            Error::Config(format!(
                "--auto-compaction-retention {retention:?} for mode {mode}: {why}"
            ))
        };
        match mode {
            "periodic" => {
                let period = match retention.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours * 3600),
                    Err(_) => humantime::parse_duration(retention)
                        .map_err(|_| bad("expected a duration (e.g. 1h, 30m) or hours"))?,
                };
                Ok(if period.is_zero() {
                    Policy::Off
                } else {
                    Policy::Periodic(period)
                })
            }
            "revision" => {
                let n = retention
                    .parse::<i64>()
                    .map_err(|_| bad("expected a number of revisions"))?;
                Ok(if n <= 0 {
                    Policy::Off
                } else {
                    Policy::Revisions(n)
                })
            }
            other => Err(Error::Config(format!(
                "--auto-compaction-mode {other:?}: expected periodic or revision"
            ))),
        }
    }

    /// How often the compactor wakes up.
    fn tick(&self) -> Duration {
        match self {
            Policy::Off => HOUR,
            Policy::Periodic(period) => ((*period).min(HOUR) / 10).max(Duration::from_millis(100)),
            Policy::Revisions(_) => REVISION_INTERVAL,
        }
    }
}

/// The decisions, apart from time and raft (so they can be tested).
pub struct Compactor {
    policy: Policy,
    /// (when, revision) samples, oldest first (periodic mode).
    samples: VecDeque<(Instant, i64)>,
    last_compaction: Option<Instant>,
    last_target: i64,
}

impl Compactor {
    pub fn new(policy: Policy) -> Compactor {
        Compactor {
            policy,
            samples: VecDeque::new(),
            last_compaction: None,
            last_target: 0,
        }
    }

    /// Called every tick with the current revision; the revision to compact to, if it is time.
    pub fn on_tick(&mut self, now: Instant, revision: i64) -> Option<i64> {
        match self.policy {
            Policy::Off => None,
            Policy::Revisions(keep) => {
                let target = revision - keep;
                (target > 0 && target > self.last_target).then(|| {
                    self.last_target = target;
                    target
                })
            }
            Policy::Periodic(period) => {
                self.samples.push_back((now, revision));
                // Keep one sample at or before `now - period`: the revision `period` ago.
                while self.samples.len() > 1
                    && self
                        .samples
                        .get(1)
                        .is_some_and(|(t, _)| now.duration_since(*t) >= period)
                {
                    self.samples.pop_front();
                }
                let interval = period.min(HOUR);
                let due = self
                    .last_compaction
                    .is_none_or(|t| now.duration_since(t) >= interval);
                let (taken, target) = *self.samples.front()?;
                if !due || now.duration_since(taken) < period {
                    return None;
                }
                self.last_compaction = Some(now);
                (target > self.last_target).then(|| {
                    self.last_target = target;
                    target
                })
            }
        }
    }
}

/// Runs the compactor for a node (returns at once when compaction is off).
pub fn spawn(node: &Arc<Node>, policy: Policy) {
    if policy == Policy::Off {
        return;
    }
    tracing::info!(?policy, "automatic compaction");
    let weak: Weak<Node> = Arc::downgrade(node);
    tokio::spawn(async move {
        let mut compactor = Compactor::new(policy);
        let mut tick = tokio::time::interval(policy.tick());
        loop {
            tick.tick().await;
            let Some(node) = weak.upgrade() else { return };
            let Some(target) = compactor.on_tick(Instant::now(), node.store.revision()) else {
                continue;
            };
            if !node.raft_status().is_leader() || target <= node.store.compact_revision() {
                continue;
            }
            let op = Op::Compact(CompactionRequest {
                revision: target,
                physical: false,
            });
            match node.propose(op).await {
                Ok(_) => tracing::info!(revision = target, "auto-compacted"),
                Err(Error::Compacted) => {}
                Err(e) => tracing::warn!(revision = target, "auto-compaction: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_etcd() {
        assert_eq!(Policy::parse("periodic", "0").ok(), Some(Policy::Off));
        assert_eq!(
            Policy::parse("periodic", "1").ok(),
            Some(Policy::Periodic(HOUR))
        );
        assert_eq!(
            Policy::parse("periodic", "30m").ok(),
            Some(Policy::Periodic(Duration::from_secs(1800)))
        );
        assert_eq!(
            Policy::parse("revision", "1000").ok(),
            Some(Policy::Revisions(1000))
        );
        assert!(Policy::parse("revision", "1h").is_err());
        assert!(Policy::parse("sometimes", "1").is_err());
    }

    #[test]
    fn revision_mode_keeps_the_last_n_revisions() {
        let mut c = Compactor::new(Policy::Revisions(100));
        let t = Instant::now();
        assert_eq!(c.on_tick(t, 50), None);
        assert_eq!(c.on_tick(t, 150), Some(50));
        assert_eq!(c.on_tick(t, 150), None, "nothing new to compact");
        assert_eq!(c.on_tick(t, 400), Some(300));
    }

    #[test]
    fn periodic_mode_compacts_to_the_revision_of_one_period_ago() {
        let period = Duration::from_secs(100);
        let mut c = Compactor::new(Policy::Periodic(period));
        let t0 = Instant::now();
        // Samples every 10 s with the revision growing by 10 each time.
        let mut got = vec![];
        for i in 0..=25u64 {
            let now = t0 + Duration::from_secs(i * 10);
            if let Some(rev) = c.on_tick(now, 1 + (i as i64) * 10) {
                got.push((i * 10, rev));
            }
        }
        // First compaction once a full period has passed, to the revision at t0; the next one
        // a period later, to the revision a period before that.
        assert_eq!(got, vec![(100, 1), (200, 101)]);
    }
}
