//! Consensus with raft-rs: every mutation is proposed here, committed, and handed to the one
//! apply function. A single node is a raft group of one voter.
//!
//! - [`log_store`]: raft-rs's `Storage`: the log and hard state in [`wal`], the conf state in
//!   sled beside the table, the newest entries in memory.
//! - [`wal`]: the write-ahead log files (one fdatasync per Ready).
//! - [`node`]: the thread that owns the `RawNode`: ticks, proposals, ReadIndex, the Ready loop.
//! - [`logger`]: raft-rs logs through slog; this bridges it to tracing.

pub mod log_store;
pub mod logger;
pub mod node;
pub mod wal;

pub use log_store::{wal_dir, LogStart, LogStore};
pub use node::{GroupView, PeerProgress, RaftHandle, RaftOptions, RaftStatus};
