//! `raftkine restore`: a snapshot file (made by raftkine or by etcd) into the data dir of a new
//! single-member cluster.
//!
//! The data dir is built beside the target and renamed into place at the end, so an interrupted
//! restore leaves nothing that `raftkine serve` would take for a data dir. In it: a new
//! identity (new cluster id and member id, new peer CA), the history installed as a snapshot at
//! raft index 1, and the raft log of a new cluster, which starts right after index 1
//! (`LogStart::NewCluster`): applied index and log start agree, and the member serves the
//! history from its first start. Leases keep their granted TTL and get a fresh deadline when the
//! member starts, as in etcd.

use std::path::{Path, PathBuf};

use super::{etcd_db, file};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::raft::log_store::LogStore;
use crate::store::Store;

/// The raft index the restored history is installed at: where a new cluster's log starts.
pub const RESTORED_INDEX: u64 = 1;

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub storage_dir: PathBuf,
    /// The member's name (its peer certificate's name).
    pub name: String,
    /// Accept a file without a SHA-256 trailer, or with a wrong one.
    pub skip_hash_check: bool,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub revision: i64,
    pub compact_revision: i64,
    /// Revision rows (history) restored.
    pub rows: usize,
    pub leases: usize,
    pub cluster_id: u64,
    pub member_id: u64,
    /// The snapshot had etcd's authentication enabled (users and roles are not restored).
    pub auth_enabled: bool,
}

/// Fails unless `dir` is missing or an empty directory.
fn check_new_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::StorageDirNotEmpty(dir.to_path_buf()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Config(format!("storage dir {}: {e}", dir.display()))),
    }
}

/// Restores the snapshot file at `path` (see the module doc).
pub fn restore(path: &Path, options: &RestoreOptions) -> Result<Restored> {
    let dir = &options.storage_dir;
    check_new_dir(dir)?;
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
    let db = file::open(&bytes, options.skip_hash_check)?;
    let decoded = etcd_db::decode(db)?;
    drop(bytes);
    let mut history = decoded.history;
    // A new cluster: the old members and their alarms do not carry over.
    history.members.clear();
    history.alarms.clear();

    let staging = staging_dir(dir)?;
    let built = build(&staging, &history, &options.name);
    let identity = match built {
        Ok(identity) => identity,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // An empty target dir is replaced by the rename; a missing one is created by it.
    if dir.exists() {
        std::fs::remove_dir(dir)?;
    }
    std::fs::rename(&staging, dir)?;
    if let Some(parent) = dir.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(Restored {
        revision: history.revision,
        compact_revision: history.compact_revision,
        rows: history.rows.len(),
        leases: history.leases.len(),
        cluster_id: identity.cluster_id,
        member_id: identity.member_id,
        auth_enabled: decoded.auth_enabled,
    })
}

/// A fresh directory next to `dir` to build the data dir in.
fn staging_dir(dir: &Path) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::Config(format!("storage dir {}: no name", dir.display())))?;
    let mut staging_name = name.to_os_string();
    staging_name.push(format!(".restoring-{}", std::process::id()));
    let staging = dir.with_file_name(staging_name);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    Ok(staging)
}

/// Makes the data dir in `dir`: identity, installed history, raft log.
fn build(dir: &Path, history: &crate::store::backup::History, name: &str) -> Result<Identity> {
    let store = Store::open(dir)?;
    let identity = Identity::bootstrap(store.db(), dir, name)?;
    store.install_history(history, RESTORED_INDEX)?;
    LogStore::open(store.db(), &crate::raft::wal_dir(dir), identity.log_start())?;
    store.flush()?;
    Ok(identity)
}
