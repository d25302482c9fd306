//! The lessor: deadlines of leases, keep-alives, and which leases are due for revocation.
//!
//! Grants and revokes are commands (they change the table); deadlines are not replicated, as in
//! etcd: they live in memory, keep-alives move them, and only the leader proposes revocations of
//! expired leases. After a restart or a leader change, deadlines start again from the full TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::LeaseEffect;

#[derive(Debug, Clone)]
struct LeaseState {
    ttl: i64,
    deadline: Instant,
    /// When a revocation was last proposed (so it is not proposed again every check).
    revoking_since: Option<Instant>,
}

/// Lease deadlines; shared by the apply path, the lease service and the expiry task.
pub struct Lessor {
    leases: Mutex<HashMap<i64, LeaseState>>,
}

/// What TimeToLive reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    pub granted_ttl: i64,
    pub remaining_ttl: i64,
}

impl Default for Lessor {
    fn default() -> Self {
        Self::new()
    }
}

impl Lessor {
    pub fn new() -> Lessor {
        Lessor {
            leases: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<i64, LeaseState>) -> T) -> T {
        let mut guard = match self.leases.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Loads the leases found in the store at start-up, each with a full TTL ahead of it.
    pub fn restore(&self, leases: &[(i64, i64)]) {
        let now = Instant::now();
        self.with(|m| {
            for &(id, ttl) in leases {
                m.insert(id, Self::fresh(ttl, now));
            }
        });
    }

    fn fresh(ttl: i64, now: Instant) -> LeaseState {
        LeaseState {
            ttl,
            deadline: now + Duration::from_secs(ttl.max(0) as u64),
            revoking_since: None,
        }
    }

    /// Applies grants and revokes of an applied command.
    pub fn on_applied(&self, effects: &[LeaseEffect]) {
        let now = Instant::now();
        self.with(|m| {
            for effect in effects {
                match *effect {
                    LeaseEffect::Granted { id, ttl } => {
                        m.insert(id, Self::fresh(ttl, now));
                    }
                    LeaseEffect::Revoked { id } => {
                        m.remove(&id);
                    }
                }
            }
        });
    }

    /// Keep-alive: pushes the deadline a full TTL ahead; None when the lease is gone or expired.
    pub fn renew(&self, id: i64) -> Option<i64> {
        let now = Instant::now();
        self.with(|m| {
            let lease = m.get_mut(&id)?;
            if lease.deadline <= now {
                return None;
            }
            lease.deadline = now + Duration::from_secs(lease.ttl.max(0) as u64);
            Some(lease.ttl)
        })
    }

    /// Granted and remaining TTL (whole seconds, rounded up), if the lease exists.
    pub fn times(&self, id: i64) -> Option<LeaseTimes> {
        let now = Instant::now();
        self.with(|m| {
            m.get(&id).map(|l| {
                let left = l.deadline.saturating_duration_since(now);
                let remaining = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
                LeaseTimes {
                    granted_ttl: l.ttl,
                    remaining_ttl: remaining,
                }
            })
        })
    }

    /// All lease ids, sorted.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.with(|m| m.keys().copied().collect());
        ids.sort_unstable();
        ids
    }

    pub fn contains(&self, id: i64) -> bool {
        self.with(|m| m.contains_key(&id))
    }

    /// Expired leases whose revocation is not already under way (retried after `retry`).
    pub fn take_expired(&self, retry: Duration) -> Vec<i64> {
        let now = Instant::now();
        self.with(|m| {
            let mut due = vec![];
            for (id, l) in m.iter_mut() {
                let in_flight = l
                    .revoking_since
                    .is_some_and(|t| now.duration_since(t) < retry);
                if l.deadline <= now && !in_flight {
                    l.revoking_since = Some(now);
                    due.push(*id);
                }
            }
            due.sort_unstable();
            due
        })
    }

    /// A new leader extends every deadline so that no lease expires for lack of keep-alives
    /// sent to the previous leader (etcd's rule).
    pub fn promote(&self, extend: Duration) {
        let now = Instant::now();
        self.with(|m| {
            for l in m.values_mut() {
                l.deadline = now + Duration::from_secs(l.ttl.max(0) as u64) + extend;
                l.revoking_since = None;
            }
        });
    }
}
