//! raft-rs's `Storage` kept in sled: the log (index → entry), the hard state and the conf state.
//!
//! The log shares the sled database with the revision table, so the one flush per Ready that
//! makes new entries durable also covers everything applied before it (group commit).

use std::sync::RwLock;

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::error::{Error, Result};

const HARD_STATE: &[u8] = b"hard_state";
const CONF_STATE: &[u8] = b"conf_state";
/// (index, term) of the last entry removed by log compaction.
const TRUNCATED: &[u8] = b"truncated";
/// Present while a snapshot from the leader is being installed.
const INSTALLING: &[u8] = b"installing_snapshot";

/// How a log that does not exist yet begins.
#[derive(Clone, Debug)]
pub enum LogStart {
    NewCluster { voters: Vec<u64> },
    Join,
}

#[derive(Default, Clone)]
struct Cached {
    hard_state: HardState,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
}

/// The persistent raft log.
pub struct LogStore {
    log: sled::Tree,
    state: sled::Tree,
    cached: RwLock<Cached>,
    /// Produces (applied index, table export) when raft needs a snapshot for a lagging member.
    snapshot_source: Option<SnapshotSource>,
    /// The last run crashed while installing a snapshot (the table must be emptied).
    pub interrupted_install: bool,
    /// The newest entries, in index order: committed entries are read back from here for
    /// applying rather than from sled.
    recent: RwLock<std::collections::VecDeque<Entry>>,
}

/// How many of the newest entries [`LogStore`] keeps in memory.
const RECENT_ENTRIES: usize = 16 * 1024;

/// See [`LogStore::set_snapshot_source`].
pub type SnapshotSource = Box<dyn Fn() -> Result<(u64, Vec<u8>)> + Send + Sync>;

fn storage_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    /// Opens the log in `db`. A brand-new log starts as `start` says: a new cluster's first
    /// member starts with itself as the only voter, recorded as a snapshot at index 1 (so members
    /// that join later always receive the membership through a snapshot); a joining member starts
    /// empty and learns everything from the leader.
    pub fn open(db: &sled::Db, start: LogStart) -> Result<LogStore> {
        let log = db.open_tree("raft_log")?;
        let state = db.open_tree("raft_state")?;
        let mut cached = Cached::default();
        if let Some(b) = state.get(HARD_STATE)? {
            cached.hard_state = parse(&b)?;
        }
        match state.get(CONF_STATE)? {
            Some(b) => cached.conf_state = parse(&b)?,
            None => {
                if let LogStart::NewCluster { voters } = &start {
                    cached.conf_state.set_voters(voters.clone());
                    cached.hard_state.set_term(1);
                    cached.hard_state.set_commit(1);
                    let mut truncated = 1u64.to_be_bytes().to_vec();
                    truncated.extend_from_slice(&1u64.to_be_bytes());
                    state.insert(TRUNCATED, truncated)?;
                    state.insert(HARD_STATE, write(&cached.hard_state)?)?;
                }
                state.insert(CONF_STATE, write(&cached.conf_state)?)?;
            }
        }
        if let Some(b) = state.get(TRUNCATED)? {
            if b.len() == 16 {
                cached.truncated_index = u64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8]));
                cached.truncated_term = u64::from_be_bytes(b[8..].try_into().unwrap_or([0; 8]));
            }
        }
        let interrupted_install = state.contains_key(INSTALLING)?;
        if interrupted_install {
            // A crash while installing a snapshot: the table is not trustworthy. Keep term and
            // vote (raft safety), forget the log, and let the leader send a snapshot again.
            log.clear()?;
            state.remove(TRUNCATED)?;
            state.remove(INSTALLING)?;
            cached.hard_state.set_commit(0);
            state.insert(HARD_STATE, write(&cached.hard_state)?)?;
            cached.conf_state = ConfState::default();
            state.insert(CONF_STATE, write(&cached.conf_state)?)?;
        }
        cached.last_index = match log.last()? {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
            None => cached.truncated_index,
        };
        Ok(LogStore {
            log,
            state,
            cached: RwLock::new(cached),
            snapshot_source: None,
            interrupted_install,
            recent: RwLock::new(std::collections::VecDeque::new()),
        })
    }

    /// Where snapshots for lagging members come from (the table, at its applied index).
    pub fn set_snapshot_source(&mut self, source: SnapshotSource) {
        self.snapshot_source = Some(source);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cached> {
        self.cached.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Cached> {
        self.cached.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends entries, replacing any conflicting tail. Not flushed here.
    pub fn append(&self, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        let old_last = self.read().last_index;
        for stale in first.index..=old_last {
            batch.remove(&index_key(stale));
        }
        for e in entries {
            batch.insert(&index_key(e.index), write(e)?);
        }
        self.log.apply_batch(batch)?;
        if let Some(last) = entries.last() {
            self.write_cache().last_index = last.index;
        }
        let mut recent = self.recent.write().unwrap_or_else(|p| p.into_inner());
        while recent.back().is_some_and(|e| e.index >= first.index) {
            recent.pop_back();
        }
        if recent.back().is_some_and(|e| e.index + 1 != first.index) {
            recent.clear();
        }
        recent.extend(entries.iter().cloned());
        while recent.len() > RECENT_ENTRIES {
            recent.pop_front();
        }
        Ok(())
    }

    /// Entries `low..high` from memory, when all of them are there.
    fn recent_entries(&self, low: u64, high: u64, max_size: u64) -> Option<Vec<Entry>> {
        let recent = self.recent.read().unwrap_or_else(|p| p.into_inner());
        let first = recent.front()?.index;
        let last = recent.back()?.index;
        if low < first || high > last + 1 {
            return None;
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for e in recent.range((low - first) as usize..(high - first) as usize) {
            size += u64::from(protobuf::Message::compute_size(e));
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }

    pub fn set_hard_state(&self, hs: &HardState) -> Result<()> {
        self.state.insert(HARD_STATE, write(hs)?)?;
        self.write_cache().hard_state = hs.clone();
        Ok(())
    }

    pub fn set_commit(&self, commit: u64) -> Result<()> {
        let mut hs = self.read().hard_state.clone();
        hs.set_commit(commit);
        self.set_hard_state(&hs)
    }

    /// Raises the persisted commit index to at least `index` (an index known to be committed).
    pub fn raise_commit_to(&self, index: u64) -> Result<()> {
        let hs = self.read().hard_state.clone();
        if hs.commit < index && index <= self.read().last_index {
            self.set_commit(index)?;
        }
        Ok(())
    }

    pub fn set_conf_state(&self, cs: &ConfState) -> Result<()> {
        self.state.insert(CONF_STATE, write(cs)?)?;
        self.write_cache().conf_state = cs.clone();
        Ok(())
    }

    pub fn conf_state(&self) -> ConfState {
        self.read().conf_state.clone()
    }

    /// Drops entries up to and including `index` (already applied and durable in the table).
    pub fn compact(&self, index: u64) -> Result<()> {
        let (truncated, last) = {
            let c = self.read();
            (c.truncated_index, c.last_index)
        };
        if index <= truncated || index > last {
            return Ok(());
        }
        let term = self.term(index).map_err(Error::Raft)?;
        let mut value = index.to_be_bytes().to_vec();
        value.extend_from_slice(&term.to_be_bytes());
        self.state.insert(TRUNCATED, value)?;
        let mut batch = sled::Batch::default();
        for i in truncated + 1..=index {
            batch.remove(&index_key(i));
        }
        self.log.apply_batch(batch)?;
        let mut c = self.write_cache();
        c.truncated_index = index;
        c.truncated_term = term;
        Ok(())
    }

    /// Marks the start of a snapshot install (see `LogStore::open`).
    pub fn begin_snapshot_install(&self) -> Result<()> {
        self.state.insert(INSTALLING, &[])?;
        Ok(())
    }

    /// Replaces the log by a snapshot received from the leader (the table was installed first),
    /// ending the install.
    pub fn apply_snapshot(&self, meta: &SnapshotMetadata) -> Result<()> {
        let index = meta.index;
        let mut value = index.to_be_bytes().to_vec();
        value.extend_from_slice(&meta.term.to_be_bytes());
        self.log.clear()?;
        self.recent
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.state.insert(TRUNCATED, value)?;
        self.set_conf_state(meta.get_conf_state())?;
        let mut hs = self.read().hard_state.clone();
        if hs.commit < index {
            hs.set_commit(index);
        }
        if hs.term < meta.term {
            hs.set_term(meta.term);
        }
        self.set_hard_state(&hs)?;
        self.state.remove(INSTALLING)?;
        let mut c = self.write_cache();
        c.truncated_index = index;
        c.truncated_term = meta.term;
        c.last_index = index;
        Ok(())
    }

    /// The (index, term) a snapshot of the table at `applied` would carry.
    pub fn snapshot_point(&self, applied: u64) -> raft::Result<(u64, u64)> {
        let index = applied.max(self.read().truncated_index);
        Ok((index, self.term(index)?))
    }

    pub fn first_index_now(&self) -> u64 {
        self.read().truncated_index + 1
    }
}

fn write<M: protobuf::Message>(m: &M) -> Result<Vec<u8>> {
    m.write_to_bytes()
        .map_err(|e| Error::Corrupt(format!("encoding raft state: {e}")))
}

fn parse<M: protobuf::Message>(b: &[u8]) -> Result<M> {
    M::parse_from_bytes(b).map_err(|e| Error::Corrupt(format!("raft state: {e}")))
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.read();
        Ok(RaftState::new(c.hard_state.clone(), c.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let (first, last) = {
            let c = self.read();
            (c.truncated_index + 1, c.last_index)
        };
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > last + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(found) = self.recent_entries(low, high, max_size) {
            return Ok(found);
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for item in self.log.range(index_key(low)..index_key(high)) {
            let (_, v) = item.map_err(storage_err)?;
            let e: Entry = Entry::parse_from_bytes(&v).map_err(storage_err)?;
            size += v.len() as u64;
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (truncated_index, truncated_term, last) = {
            let c = self.read();
            (c.truncated_index, c.truncated_term, c.last_index)
        };
        if idx == truncated_index {
            return Ok(truncated_term);
        }
        if idx < truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > last {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        {
            let recent = self.recent.read().unwrap_or_else(|p| p.into_inner());
            if let Some(first) = recent.front().map(|e| e.index) {
                if idx >= first {
                    if let Some(e) = recent.get((idx - first) as usize) {
                        return Ok(e.term);
                    }
                }
            }
        }
        match self.log.get(index_key(idx)).map_err(storage_err)? {
            Some(v) => Ok(Entry::parse_from_bytes(&v).map_err(storage_err)?.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let Some(source) = &self.snapshot_source else {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        };
        let (applied, data) = source().map_err(storage_err)?;
        let (index, term) = self.snapshot_point(applied)?;
        if index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state());
        Ok(snapshot)
    }
}
