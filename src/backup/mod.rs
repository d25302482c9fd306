//! Backups in etcd's snapshot format: what Maintenance.Snapshot streams, what `raftkine backup`
//! saves and what `raftkine restore` reads, interchangeable with `etcdctl snapshot save/restore`.
//!
//! - [`bbolt`]: the bbolt page format (no etcd knowledge).
//! - [`etcd_db`]: etcd 3.4's buckets on it, to and from a [`History`].
//! - [`file`]: the SHA-256 trailer after the database.
//! - [`restore`]: a snapshot file into the data dir of a new single-member cluster.

pub mod bbolt;
pub mod etcd_db;
pub mod file;
pub mod restore;

use crate::error::Result;
use crate::store::backup::History;
use crate::store::Store;

/// A snapshot file of the store at one consistent point: the etcd database, then its SHA-256.
/// Returns it with the history's revision.
pub fn snapshot_file(store: &Store) -> Result<(Vec<u8>, i64)> {
    let history: History = store.history()?;
    Ok((file::seal(etcd_db::encode(&history)?), history.revision))
}
