//! `raftkine backup` and `raftkine restore`: saving a member's snapshot stream to a file, and
//! making a new member's data dir from such a file (or one saved from etcd).

use std::io::Write;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use super::{connect, status_error};
use crate::backup::restore::{restore as restore_dir, RestoreOptions};
use crate::backup::{etcd_db, file};
use crate::error::{Error, Result};
use crate::proto::etcdserverpb::{maintenance_client::MaintenanceClient, SnapshotRequest};

/// `raftkine backup FILE`: takes the Maintenance.Snapshot stream of the member at `endpoint`
/// (raftkine or etcd), checks it, and writes it to `path` atomically.
pub async fn backup(endpoint: &str, path: &Path) -> Result<()> {
    let mut client = MaintenanceClient::new(connect(endpoint).await?);
    let mut stream = client
        .snapshot(SnapshotRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec}, {eta} left",
        )
        .map_err(|e| Error::Config(format!("progress bar: {e}")))?,
    );
    let mut data = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        if data.is_empty() {
            bar.set_length(chunk.blob.len() as u64 + chunk.remaining_bytes);
        }
        data.extend_from_slice(&chunk.blob);
        bar.set_position(data.len() as u64);
    }
    bar.finish_and_clear();
    let db = file::open(&data, false)?;
    let decoded = etcd_db::decode(db)?;
    write_atomically(path, &data)?;
    println!(
        "saved {}: {} bytes, revision {}, sha256 {}",
        path.display(),
        data.len(),
        decoded.history.revision,
        file::sha256_hex(&data)
    );
    Ok(())
}

/// Writes `path` through a temporary file in the same directory, synced, then renamed.
fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::Config(format!("{}: not a file name", path.display())))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".part");
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Config(format!("writing {}: {e}", path.display())));
    }
    Ok(())
}

/// `raftkine restore FILE --storage-dir DIR`.
pub fn restore(path: &Path, options: &RestoreOptions) -> Result<()> {
    let restored = restore_dir(path, options)?;
    let dir = options.storage_dir.display();
    println!(
        "restored {} into {dir}: revision {}, compacted at {}, {} history rows, {} leases",
        path.display(),
        restored.revision,
        restored.compact_revision,
        restored.rows,
        restored.leases
    );
    println!(
        "new cluster {:x}, member {:x}; start it with: raftkine serve --storage-dir {dir}",
        restored.cluster_id, restored.member_id
    );
    if restored.auth_enabled {
        println!("note: the snapshot had authentication enabled; users and roles are not restored");
    }
    Ok(())
}
