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
//! - [`compactor`]: optional automatic compaction (etcd's `--auto-compaction-*`).
//! - [`error`]: error types and their etcd gRPC statuses, in one place.
//! - [`backup`]: etcd's snapshot format (bbolt + sha256): Maintenance.Snapshot, backup, restore.
//! - [`config`], [`server`]: settings and listeners.
//! - [`migrate`]: copying data in from etcd, kine or k8s-dqlite (and k8s-dqlite's migrator).
//! - [`dqlite`]: the k8s-dqlite drop-in: its flags, storage-dir files and `dqlite` admin verbs.
//! - [`proto`], [`grpc_codec`]: generated etcd wire types, and the codec their services use.
//! - [`metrics`], [`grpc_metrics`], [`http`]: Prometheus metrics, the gRPC counters layer, and
//!   the metrics/health listener; [`disk_guard`]: the low-disk-space watch.

pub mod api;
pub mod authority;
pub mod backup;
pub mod cli;
pub mod coalesce;
pub mod command;
pub mod compactor;
pub mod config;
pub mod disk_guard;
pub mod dqlite;
pub mod error;
pub mod grpc_codec;
pub mod grpc_metrics;
pub mod http;
pub mod http2_frame;
pub mod identity;
pub mod lease;
pub mod membership;
pub mod metrics;
pub mod migrate;
pub mod node;
pub mod peer;
pub mod proto;
pub mod raft;
pub mod recover;
pub mod server;
pub mod store;
pub mod tls;
pub mod watch;
