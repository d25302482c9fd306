//! Moving data into (and out of) raftkine through the etcd API, for operators switching from
//! etcd, kine or k8s-dqlite:
//!
//! - [`endpoint`]: connecting to any etcd-compatible endpoint (http, https with etcdctl's TLS
//!   files, unix sockets).
//! - [`copy`]: `raftkine migrate`: every key under a prefix, read at one revision in pages,
//!   written in batches, then counted and checksummed on both sides.
//! - [`backup_dir`]: k8s-dqlite's migrator directory format (`N.key` / `N.data` files) and its
//!   `migrator --mode ...` command line.

pub mod backup_dir;
pub mod copy;
pub mod endpoint;
