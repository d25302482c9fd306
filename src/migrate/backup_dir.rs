//! k8s-dqlite's migrator backup directory: key `i` in `i.key`, its value in `i.data`, for
//! `i = 0, 1, 2, …` until a `.key` file is missing; and the `migrator` command line MicroK8s's
//! `dbctl` and upgrade scripts run:
//!
//! ```text
//! k8s-dqlite migrator --endpoint ENDPOINT --mode backup-dqlite|restore-to-dqlite|… --db-dir DIR [--debug]
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;
use tonic::transport::Channel;

use super::copy::{Entry, Pager, Writer};
use crate::error::{Error, Result};
use crate::proto::etcdserverpb::kv_client::KvClient;

fn key_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{i}.key"))
}

fn data_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{i}.data"))
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Config(format!("{}: {e}", path.display()))
}

/// Every entry of a backup dir, in file order.
pub fn read(dir: &Path) -> Result<Vec<Entry>> {
    let mut out = vec![];
    for i in 0.. {
        let key = match std::fs::read(key_file(dir, i)) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(io(&key_file(dir, i), e)),
        };
        let value = std::fs::read(data_file(dir, i)).map_err(|e| io(&data_file(dir, i), e))?;
        out.push(Entry {
            key,
            value: value.into(),
            lease: 0,
        });
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "{}: no backup entries (0.key, 0.data, …)",
            dir.display()
        )));
    }
    Ok(out)
}

/// Writes entries as a backup dir (created with mode 0700, files 0640 as k8s-dqlite does).
pub fn write(dir: &Path, entries: &[Entry]) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io(dir, e))?;
    for (i, e) in entries.iter().enumerate() {
        for (path, bytes) in [
            (key_file(dir, i), e.key.as_slice()),
            (data_file(dir, i), e.value.as_ref()),
        ] {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o640)
                .open(&path)
                .map_err(|err| io(&path, err))?;
            std::io::Write::write_all(&mut f, bytes).map_err(|err| io(&path, err))?;
        }
    }
    Ok(())
}

/// `raftkine migrator` (k8s-dqlite's flags).
#[derive(Args, Debug, Clone)]
pub struct MigratorArgs {
    /// The etcd, kine, k8s-dqlite or raftkine endpoint.
    #[arg(
        long,
        default_value = "unix:///var/snap/microk8s/current/var/kubernetes/backend/kine.sock"
    )]
    pub endpoint: String,
    /// backup | backup-etcd | backup-dqlite (endpoint → dir), or restore | restore-to-dqlite |
    /// restore-dqlite | restore-to-etcd | restore-etcd (dir → endpoint).
    #[arg(long, default_value = "backup")]
    pub mode: String,
    /// The backup dir.
    #[arg(long, default_value = "db")]
    pub db_dir: PathBuf,
    /// Debug logging.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub debug: Option<bool>,
}

/// Runs a migrator mode; returns the number of entries moved.
pub async fn migrator(args: &MigratorArgs) -> Result<usize> {
    let channel = crate::cli::connect(&args.endpoint).await?;
    match args.mode.as_str() {
        // k8s-dqlite's backup-dqlite lists the keys under "/", the etcd modes every key.
        "backup" | "backup-etcd" => backup(channel, b"", &args.db_dir).await,
        "backup-dqlite" => backup(channel, b"/", &args.db_dir).await,
        "restore" | "restore-to-dqlite" | "restore-dqlite" | "restore-to-etcd" | "restore-etcd" => {
            let entries = read(&args.db_dir)?;
            Writer::new(channel)
                .put_all(&entries, &HashMap::new())
                .await?;
            Ok(entries.len())
        }
        other => Err(Error::Config(format!(
            "unknown migrator mode {other:?} (backup, backup-etcd, backup-dqlite, restore, \
             restore-to-dqlite, restore-dqlite, restore-to-etcd, restore-etcd)"
        ))),
    }
}

async fn backup(channel: Channel, prefix: &[u8], dir: &Path) -> Result<usize> {
    let mut pager = Pager::new(KvClient::new(channel), prefix);
    let mut all = vec![];
    while let Some(page) = pager.next().await? {
        all.extend(page);
    }
    write(dir, &all)?;
    Ok(all.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_dir_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries = vec![
            Entry {
                key: b"/registry/a".to_vec(),
                value: vec![0, 1, 2, 255].into(),
                lease: 0,
            },
            Entry {
                key: b"/registry/b".to_vec(),
                value: bytes::Bytes::new(),
                lease: 0,
            },
        ];
        write(dir.path(), &entries).expect("write");
        assert!(dir.path().join("1.data").exists());
        let back = read(dir.path()).expect("read");
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].value, vec![0, 1, 2, 255]);
        assert_eq!(back[1].key, b"/registry/b");
        assert!(read(&dir.path().join("missing")).is_err());
    }
}
