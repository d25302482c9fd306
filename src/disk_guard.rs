//! The disk guard (k8s-dqlite's `--watch-storage-available-size-interval`,
//! `--watch-storage-available-size-min-bytes`, `--low-available-storage-action`): every interval
//! it reads the free space of the storage dir's filesystem (statvfs: the blocks available to
//! unprivileged users). Below the minimum, the member raises the NOSPACE alarm through raft
//! (the normal apply path: every member then refuses writes with etcd's
//! `etcdserver: mvcc: database space exceeded`, reads and deletes keep working) and takes the
//! configured action: `handover` makes a leader hand leadership to another voter, `terminate`
//! shuts the member down. The alarm stays until disarmed (`raftkine alarm disarm`, `etcdctl alarm
//! disarm`); while space is still low the guard raises it again at its next check.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::config::{LowStorageAction, ServeConfig};
use crate::error::{Error, Result};
use crate::metrics::metrics;
use crate::node::Node;
use crate::proto::etcdserverpb::AlarmType;

/// Free bytes of the filesystem holding the storage dir, as the guard sees them.
pub fn available_bytes(config: &ServeConfig) -> Result<u64> {
    if let Some(bytes) = test_probe(config) {
        return Ok(bytes);
    }
    statvfs_available(&config.storage_dir)
}

/// For tests only: the number in `--test-available-bytes-file` (hidden flag, env
/// `RAFTKINE_TEST_AVAILABLE_BYTES_FILE`) replaces statvfs, so that a test can steer the free space
/// a member sees. A relative path is taken inside the storage dir. A missing or unreadable file
/// means "ask statvfs".
fn test_probe(config: &ServeConfig) -> Option<u64> {
    let file = config.test_available_bytes_file.as_ref()?;
    let path = if file.is_relative() {
        config.storage_dir.join(file)
    } else {
        file.clone()
    };
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// statvfs(2): blocks available to unprivileged users times the fragment size.
pub fn statvfs_available(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::Config(format!("storage dir {} contains a NUL byte", dir.display())))?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value to be overwritten.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// The guard's task (spawned by `Node::start_with`); returns when the node stops. Does nothing
/// when the interval is 0.
pub async fn watch(node: Weak<Node>) {
    let Some(interval) = node
        .upgrade()
        .map(|n| n.config.watch_storage_available_size_interval)
    else {
        return;
    };
    if interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut low = false;
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if node
            .raft_status()
            .stopped
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let min = node.config.watch_storage_available_size_min_bytes;
        let available = match available_bytes(&node.config) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(
                    "disk guard: free space of {}: {e}",
                    node.config.storage_dir.display()
                );
                continue;
            }
        };
        metrics()
            .storage_available
            .set(available.min(i64::MAX as u64) as i64);
        if available >= min {
            if low {
                tracing::info!(
                    available,
                    min,
                    "disk guard: free space is back; writes resume once the NOSPACE alarm is \
                     disarmed (raftkine alarm disarm, etcdctl alarm disarm)"
                );
                low = false;
            }
            continue;
        }
        if !low {
            tracing::warn!(
                available,
                min,
                action = ?node.config.low_available_storage_action,
                "disk guard: storage is running low; raising the NOSPACE alarm (writes are refused)"
            );
            low = true;
        }
        on_low_storage(&node, available).await;
    }
}

async fn on_low_storage(node: &Arc<Node>, available: u64) {
    if let Err(e) = node.raise_alarm(AlarmType::Nospace).await {
        tracing::warn!("disk guard: raising the NOSPACE alarm: {e} (trying again next check)");
    }
    match node.config.low_available_storage_action {
        LowStorageAction::None => {}
        LowStorageAction::Handover => {
            if node.raft_status().is_leader() {
                tracing::warn!("disk guard: handing leadership over to another voter");
                match node.step_down().await {
                    Ok(()) => tracing::info!("disk guard: leadership handed over"),
                    Err(e) => tracing::warn!("disk guard: handing leadership over: {e}"),
                }
            }
        }
        LowStorageAction::Terminate => {
            let reason = format!(
                "disk guard: {available} bytes free in {} (below {}): terminating",
                node.config.storage_dir.display(),
                node.config.watch_storage_available_size_min_bytes
            );
            tracing::error!("{reason}");
            node.request_stop(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_sees_free_space() {
        let dir = std::env::temp_dir();
        let free = statvfs_available(&dir).unwrap_or(0);
        assert!(free > 0, "no free space reported for {}", dir.display());
    }
}
