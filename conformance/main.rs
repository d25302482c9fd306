//! Differential conformance suite: Debian's etcd 3.4 (the oracle) and raftkine get the same
//! operations and must give the same answers — values, revisions, versions, counts, `more`,
//! prev_kvs, txn results, watch events, lease fields, error codes and messages — ignoring only
//! member/cluster ids, raft terms and timing.
//!
//! Environment:
//! - `CONFORMANCE_AGAINST=etcd`: the subject is a second etcd (checks the suite itself).
//! - `CONFORMANCE_SEED=<u64>`: seed of the randomized run (random otherwise; always printed).
//! - `CONFORMANCE_OPS=<n>`: operations in the randomized run (default 2000).
//! - `CONFORMANCE_KEEP_GOING=1`: scripted tests report every divergence, not just the first.
//! - `CONFORMANCE_TRACE=1`: print every step with the oracle's answer (use with --nocapture).
//! - `CONFORMANCE_SABOTAGE=<step>`: alter the subject's answer at that step (shows a failure).
//! - `RAFTKINE_BIN=<path>`: the raftkine binary (default: the one cargo builds).
//!
//! Modules: `answer` (normalised answers), `ops` (operations and their execution), `pair` (the
//! two servers and the comparison), `watch` (watch transcripts), `scripted` (fixed cases),
//! `random` (the seeded randomized run), `etcdctl` (the command-line client against both).

#[path = "../tests/support/mod.rs"]
mod support;

mod answer;
mod etcdctl;
mod ops;
mod pair;
mod random;
mod scripted;
mod watch;
