//! The revision table: etcd's MVCC key space kept in sled, with the one function that mutates it.
//!
//! - [`schema`]: how rows, leases and meta are laid out in one sled tree.
//! - [`index`]: the key index in memory: which row of a key is visible at a revision.
//! - [`apply`]: `Store::apply`, the deterministic execution of a committed command.
//! - [`read`]: ranges at any revision, and how a range request shapes its answer.
//! - [`compact`]: removal of history superseded before a compaction revision.
//! - [`history`]: reading applied events back in order (watch catch-up), hashes.
//! - [`backup`]: the whole history at one consistent point, and back into table entries.
//! - [`snapshot`]: raftkine's own snapshot blob (raft snapshots), and installing one.

pub mod apply;
pub mod backup;
pub mod compact;
pub mod history;
pub mod index;
pub mod membership;
pub mod read;
pub mod schema;
pub mod snapshot;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockWriteGuard};

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::mvccpb::KeyValue;
use schema::*;

pub use apply::{Applied, LeaseEffect, Response};
pub use read::KeyRange;

/// The revision table, shared by the apply thread (the only writer) and every reader.
pub struct Store {
    db: sled::Db,
    table: sled::Tree,
    /// The key index; updated together with `revision` and `compact_revision`, under its lock.
    index: index::KeyIndex,
    revision: AtomicI64,
    compact_revision: AtomicI64,
    applied_index: AtomicU64,
    /// Held (written) by every commit, briefly; [`Store::history`] reads the meta values and
    /// leases under it so they are those of one applied command.
    commit_lock: RwLock<()>,
    /// Held (written) by commits that delete rows at or below the current revision (compaction,
    /// snapshot installs); [`Store::history`] holds it while it reads rows.
    history_pin: RwLock<()>,
    /// A NOSPACE alarm is raised (kept in step with the alarm rows by the apply path).
    nospace: AtomicBool,
}

/// The default of `--cache-mib`: sled's page cache. With 64 MiB a member that had just taken
/// 100k keys of 1 KiB held 123 MiB, with 32 MiB 98; lists of 10k objects of 4 KiB (40 MiB,
/// more than fits) were ~10 % slower (bench/README.md, session 7).
pub const DEFAULT_CACHE_MIB: u64 = 32;

impl Store {
    /// Opens (or creates) the store in `dir`, with the default cache.
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_with_cache(dir, DEFAULT_CACHE_MIB)
    }

    /// Opens (or creates) the store in `dir`, with at most `cache_mib` MiB of cached pages.
    pub fn open_with_cache(dir: &Path, cache_mib: u64) -> Result<Store> {
        std::fs::create_dir_all(dir)?;
        let started = std::time::Instant::now();
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(cache_mib.clamp(1, 1 << 20) * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            // raft flushes once per Ready (group commit); sled's own timer would only add
            // fsyncs competing with it.
            .flush_every_ms(None)
            .open()?;
        let opened = started.elapsed();
        let store = Self::with_db(db)?;
        tracing::info!(
            keys = store.index.read().key_count(),
            open_ms = opened.as_millis() as u64,
            index_ms = (started.elapsed() - opened).as_millis() as u64,
            "opened the table"
        );
        Ok(store)
    }

    /// A store in a temporary sled database (tests).
    pub fn temporary() -> Result<Store> {
        Self::with_db(sled::Config::new().temporary(true).open()?)
    }

    fn with_db(db: sled::Db) -> Result<Store> {
        let table = db.open_tree("revisions")?;
        let store = Store {
            db,
            table,
            index: index::KeyIndex::default(),
            revision: AtomicI64::new(1),
            compact_revision: AtomicI64::new(-1),
            applied_index: AtomicU64::new(0),
            commit_lock: RwLock::new(()),
            history_pin: RwLock::new(()),
            nospace: AtomicBool::new(false),
        };
        store.drop_old_layout()?;
        store.reload()?;
        Ok(store)
    }

    /// Removes the key index and live table an older raftkine kept in the tree, and moves its
    /// revision and applied index into [`META_STATE`].
    fn drop_old_layout(&self) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut found = 0usize;
        for prefix in [OLD_INDEX, OLD_LIVE] {
            for item in self.table.scan_prefix([prefix]) {
                batch.remove(item?.0);
                found += 1;
            }
        }
        let old = |name: &[u8]| -> Result<Option<i64>> {
            Ok(self.table.get(name)?.as_deref().and_then(decode_i64))
        };
        let (applied, revision) = (old(OLD_META_APPLIED)?, old(OLD_META_REVISION)?);
        if applied.is_some() || revision.is_some() {
            if !self.table.contains_key(META_STATE)? {
                let state = encode_state(applied.unwrap_or(0) as u64, revision.unwrap_or(1));
                batch.insert(META_STATE, &state);
            }
            batch.remove(OLD_META_APPLIED);
            batch.remove(OLD_META_REVISION);
            found += 1;
        }
        if found > 0 {
            tracing::info!(entries = found, "removing the key index of an older layout");
            self.table.apply_batch(batch)?;
            self.flush()?;
        }
        Ok(())
    }

    /// Reads the meta values and rebuilds the key index from the row owners (at start, and
    /// after the table was replaced).
    pub(crate) fn reload(&self) -> Result<()> {
        self.reload_meta()?;
        self.remove_unfinished_command()?;
        self.rebuild_owners_if_stale()?;
        // The owners are read in revision ranges, one thread each, then the index is built
        // from all of them at once.
        let parts = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let high = self.revision() + 1;
        let step = (high / parts as i64).max(1);
        let bounds: Vec<i64> = (0..parts as i64)
            .map(|i| i * step)
            .chain(std::iter::once(i64::MAX))
            .collect();
        let read = |from: i64, to: i64| -> Result<Vec<(Vec<u8>, index::Version)>> {
            let mut rows = vec![];
            for item in self
                .table
                .range(owners_key(Rev::new(from, 0))..owners_key(Rev::new(to, 0)))
            {
                let (_, value) = item?;
                let owners =
                    decode_owners(&value).ok_or_else(|| Error::Corrupt("row owners".into()))?;
                rows.extend(owners.into_iter().map(|o| {
                    let version = index::Version {
                        rev: o.rev,
                        tombstone: o.tombstone,
                    };
                    (o.key, version)
                }));
            }
            Ok(rows)
        };
        let read_parts: Vec<Result<Vec<_>>> = std::thread::scope(|s| {
            let handles: Vec<_> = bounds
                .windows(2)
                .map(|w| s.spawn(move || read(w[0], w[1])))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Corrupt("reading row owners".into())))
                })
                .collect()
        });
        let mut rows = vec![];
        for part in read_parts {
            rows.extend(part?);
        }
        let keys = index::Keys::from_rows(rows);
        *self.index.write() = keys;
        Ok(())
    }

    /// Removes the rows and owners above the revision: what a crash left of a command written
    /// without a batch (see `Store::commit_batch`), applied again from the raft log.
    fn remove_unfinished_command(&self) -> Result<()> {
        let above = Rev::new(self.revision() + 1, 0);
        let top = Rev::new(i64::MAX, i64::MAX);
        let mut debris = sled::Batch::default();
        let mut found = 0usize;
        for (from, to) in [
            (row_key(above), row_key(top)),
            (owners_key(above), owners_key(top)),
        ] {
            for item in self.table.range(from..to) {
                debris.remove(item?.0);
                found += 1;
            }
        }
        if found > 0 {
            tracing::warn!(
                entries = found,
                "removing the rows of a command cut short by a crash"
            );
            self.table.apply_batch(debris)?;
            self.flush()?;
        }
        Ok(())
    }

    /// Writes every row's owner again from the rows when the table does not show that the
    /// owners were kept with them (see `schema.rs`): a table of an older raftkine, or one
    /// that an older member wrote to since.
    fn rebuild_owners_if_stale(&self) -> Result<()> {
        /// Rows per owners entry written while rebuilding.
        const CHUNK: usize = 256;
        let state = encode_state(self.applied_index(), self.revision());
        if self.table.get(META_OWNERS_STATE)?.as_deref() == Some(&state[..]) {
            return Ok(());
        }
        let mut stale = sled::Batch::default();
        for item in self.table.scan_prefix([ROW_OWNER]) {
            stale.remove(item?.0);
        }
        self.table.apply_batch(stale)?;
        let write = |owners: &mut Vec<Owner>| -> Result<()> {
            if let Some(last) = owners.last() {
                self.table
                    .insert(owners_key(last.rev), encode_owners(owners))?;
            }
            owners.clear();
            Ok(())
        };
        let mut owners = Vec::with_capacity(CHUNK);
        let mut rows = 0usize;
        for item in self.table.scan_prefix([ROW]) {
            let (k, row) = item?;
            let rev = Rev::from_bytes(&k[1..]).ok_or_else(|| Error::Corrupt("row key".into()))?;
            let (key, tombstone) =
                index::key_of_row(&row).ok_or_else(|| Error::Corrupt("row".into()))?;
            owners.push(Owner {
                rev,
                key: key.to_vec(),
                tombstone,
            });
            rows += 1;
            if owners.len() == CHUNK {
                write(&mut owners)?;
            }
        }
        write(&mut owners)?;
        self.table.insert(META_OWNERS_STATE, &state)?;
        self.flush()?;
        if rows > 0 {
            tracing::info!(
                rows,
                "recorded the key of every row (table of an older layout)"
            );
        }
        Ok(())
    }

    /// Loads revision, compaction revision and applied index from the table.
    fn reload_meta(&self) -> Result<()> {
        let meta = |name: &[u8]| -> Result<Option<i64>> {
            match self.table.get(name)? {
                Some(v) => decode_i64(&v)
                    .map(Some)
                    .ok_or_else(|| Error::Corrupt("meta value".into())),
                None => Ok(None),
            }
        };
        // An empty etcd starts at revision 1.
        let (applied, revision) = match self.table.get(META_STATE)? {
            Some(v) => decode_state(&v).ok_or_else(|| Error::Corrupt("meta state".into()))?,
            None => (0, 1),
        };
        self.set_revision(revision);
        // etcd's compaction revision is -1 until the first compaction (Compact(0) then succeeds).
        self.compact_revision
            .store(meta(META_COMPACT)?.unwrap_or(-1), Ordering::Release);
        self.applied_index.store(applied, Ordering::Release);
        self.refresh_alarm_state()?;
        Ok(())
    }

    /// Whether a NOSPACE alarm is raised (writes other than deletes are then refused).
    pub fn nospace_alarm(&self) -> bool {
        self.nospace.load(Ordering::Acquire)
    }

    /// Re-reads the alarm rows into [`Store::nospace_alarm`] (after an alarm was applied or the
    /// table replaced).
    pub fn refresh_alarm_state(&self) -> Result<()> {
        let nospace = crate::proto::etcdserverpb::AlarmType::Nospace as i32;
        let active = self.alarms()?.iter().any(|(_, kind)| *kind == nospace);
        self.nospace.store(active, Ordering::Release);
        Ok(())
    }

    /// Number of live keys (one pass over the key index; done at start and after a snapshot).
    pub fn count_live_keys(&self) -> Result<u64> {
        Ok(self.index.read().live_count())
    }

    /// The sled database (the raft log lives in another tree of it, so one flush covers both).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Current store revision (the main revision of the last write).
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_revision.load(Ordering::Acquire)
    }

    /// Raft index of the last applied command.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// Bytes on disk (what etcd reports as db size).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Durably writes everything applied so far.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// All leases with their granted TTL.
    pub fn leases(&self) -> Result<Vec<(i64, i64)>> {
        let mut out = vec![];
        for item in self.table.scan_prefix([LEASE]) {
            let (k, v) = item?;
            let id = decode_i64(&k[1..]).ok_or_else(|| Error::Corrupt("lease key".into()))?;
            let ttl = decode_i64(&v).ok_or_else(|| Error::Corrupt("lease ttl".into()))?;
            out.push((id, ttl));
        }
        Ok(out)
    }

    /// Granted TTL of a lease, if it exists.
    pub fn lease_ttl(&self, id: i64) -> Result<Option<i64>> {
        match self.table.get(lease_key(id))? {
            Some(v) => Ok(decode_i64(&v)),
            None => Ok(None),
        }
    }

    /// Keys attached to a lease, sorted.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>> {
        let prefix = lease_attachment_prefix(id);
        let mut out = vec![];
        for item in self.table.scan_prefix(&prefix) {
            let (k, _) = item?;
            out.push(k[prefix.len()..].to_vec());
        }
        Ok(out)
    }

    fn decode_row(bytes: &[u8]) -> Result<KeyValue> {
        Ok(KeyValue::decode(bytes)?)
    }

    /// Decodes a row for a read's answer without copying its value: the value stays a slice of
    /// the row sled returned, which the answer holds until it is encoded and dropped. (Rows kept
    /// longer, as in watch events, are copied by [`Store::decode_row`], so that they never pin
    /// a buffer of sled's.)
    fn decode_row_shared(row: sled::IVec) -> Result<KeyValue> {
        Ok(KeyValue::decode(bytes::Bytes::from_owner(row))?)
    }

    /// Locks for a commit: the history pin first (when the commit deletes history), then the
    /// commit lock (see [`Store::history`] for the readers' side).
    fn lock_commit(
        &self,
        deletes_history: bool,
    ) -> (Option<RwLockWriteGuard<'_, ()>>, RwLockWriteGuard<'_, ()>) {
        let pin =
            deletes_history.then(|| self.history_pin.write().unwrap_or_else(|p| p.into_inner()));
        let commit = self.commit_lock.write().unwrap_or_else(|p| p.into_inner());
        (pin, commit)
    }

    fn set_revision(&self, revision: i64) {
        self.revision.store(revision, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
