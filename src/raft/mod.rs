//! Consensus with raft-rs: every mutation is proposed here, committed, and handed to the one
//! apply function. A single node is a raft group of one voter.
//!
//! - [`log_store`]: raft-rs's `Storage` over sled (log entries, hard state, conf state).
//! - [`node`]: the thread that owns the `RawNode`: ticks, proposals, ReadIndex, the Ready loop.
//! - [`logger`]: raft-rs logs through slog; this bridges it to tracing.

pub mod log_store;
pub mod logger;
pub mod node;

pub use log_store::{LogStart, LogStore};
pub use node::{GroupView, PeerProgress, RaftHandle, RaftOptions, RaftStatus};
