//! raftkine: an etcd v3 compatible datastore for Kubernetes.
//!
//! Crate map (requests flow top to bottom; see README.md for the picture):
//! - [`api`]: the etcd gRPC services; validate, translate to commands or reads, map errors.
//! - [`node`]: wires the store, raft, the watch hub and the lessor into one handle the api uses.
//! - [`raft`]: the raft-rs loop: proposals, ReadIndex, persistence of the log, applying commits.
//! - [`store`]: the revision table in sled; `store::Store::apply` is the one mutation path.
//! - [`watch`]: the hub that pushes applied events to watch streams.
//! - [`lease`]: the lessor: lease deadlines, keep-alives, expiry proposals.
//! - [`command`]: the commands raft carries.
//! - [`error`]: error types and their etcd gRPC statuses, in one place.
//! - [`config`], [`server`]: settings and listeners.
//! - [`proto`]: generated etcd wire types.
//! - [`metrics`], [`grpc_metrics`], [`http`]: Prometheus metrics, the gRPC counters layer, and
//!   the metrics/health listener; [`disk_guard`]: the low-disk-space watch.

pub mod api;
pub mod authority;
pub mod cli;
pub mod command;
pub mod config;
pub mod disk_guard;
pub mod error;
pub mod grpc_metrics;
pub mod http;
pub mod identity;
pub mod lease;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod proto;
pub mod raft;
pub mod server;
pub mod store;
pub mod tls;
pub mod watch;
