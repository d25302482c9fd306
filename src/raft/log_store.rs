//! raft-rs's `Storage`: the log and the hard state in the write-ahead log (`super::wal`), the
//! conf state beside the revision table in sled (it is applied state, and so follows the table's
//! applied index), and the newest entries in memory for applying and for followers.
//!
//! Durability: new entries and hard states are durable once [`LogStore::sync`] returns (one
//! fdatasync per Ready); the table is flushed lazily, and the log keeps every entry the table
//! may not have flushed yet (see [`LogStore::compact`]).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use super::wal::{Origin, Wal};
use crate::error::{Error, Result};

const CONF_STATE: &[u8] = b"conf_state";
/// Present while a snapshot from the leader is being installed.
const INSTALLING: &[u8] = b"installing_snapshot";
/// Keys of the raft state an older layout kept in sled (carried into the WAL once).
const OLD_HARD_STATE: &[u8] = b"hard_state";
const OLD_TRUNCATED: &[u8] = b"truncated";

/// Where a member's write-ahead log lives in its storage dir.
pub fn wal_dir(storage_dir: &Path) -> std::path::PathBuf {
    storage_dir.join("wal")
}

/// How a log that does not exist yet begins.
#[derive(Clone, Debug)]
pub enum LogStart {
    NewCluster { voters: Vec<u64> },
    Join,
}

/// How many of the newest entries are kept in memory, and up to how many bytes of data. A
/// follower more than this behind, or an apply run longer than it, reads the rest back from the
/// WAL. Under write load a Ready carries a few hundred KiB, so 2 MiB still covers several; 8 MiB
/// held ~8 MB more at k8s-mix's peak with no gain in throughput (bench/README.md, session 12).
const RECENT_ENTRIES: usize = 4096;
const RECENT_BYTES: usize = 2 * 1024 * 1024;

/// The newest entries, in index order.
#[derive(Default)]
struct Recent {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Recent {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    /// Adds entries following (or replacing the tail of) those held.
    fn extend(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else {
            return;
        };
        while self.entries.back().is_some_and(|e| e.index >= first.index) {
            self.pop_back();
        }
        if self
            .entries
            .back()
            .is_some_and(|e| e.index + 1 != first.index)
        {
            self.entries.clear();
            self.bytes = 0;
        }
        for e in new {
            self.bytes += e.data.len();
            self.entries.push_back(e.clone());
        }
        while self.entries.len() > RECENT_ENTRIES
            || (self.bytes > RECENT_BYTES && self.entries.len() > 1)
        {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.data.len();
            }
        }
    }

    fn pop_back(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.bytes -= e.data.len();
        }
    }

    fn forget_through(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.data.len();
            }
        }
    }

    fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.first()?;
        self.entries.get(index.checked_sub(first)? as usize)
    }
}

/// The persistent raft log.
pub struct LogStore {
    wal: Mutex<Wal>,
    /// The conf state as of the table's applied index.
    state: sled::Tree,
    conf_state: Mutex<ConfState>,
    recent: Mutex<Recent>,
    /// Produces (applied index, table export) when raft needs a snapshot for a lagging member.
    snapshot_source: Option<SnapshotSource>,
    /// The last run crashed while installing a snapshot (the table must be emptied).
    pub interrupted_install: bool,
}

/// See [`LogStore::set_snapshot_source`].
pub type SnapshotSource = Box<dyn Fn() -> Result<(u64, Vec<u8>)> + Send + Sync>;

fn storage_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogStore {
    /// Opens the log kept in `wal_dir`, with the conf state in `db`. A brand-new log starts as
    /// `start` says: a new cluster's first member starts with itself as the only voter, recorded
    /// as a snapshot at index 1 (so members that join later always receive the membership
    /// through a snapshot); a joining member starts empty and learns everything from the leader.
    /// A log kept in sled by an older raftkine is moved into `wal_dir`.
    pub fn open(db: &sled::Db, wal_dir: &Path, start: LogStart) -> Result<LogStore> {
        let state = db.open_tree("raft_state")?;
        let old_log = db.open_tree("raft_log")?;
        let mut conf_state = match state.get(CONF_STATE)? {
            Some(b) => parse(&b)?,
            None => ConfState::default(),
        };
        if !Wal::exists(wal_dir) {
            let (origin, entries) = match state.get(OLD_HARD_STATE)? {
                Some(hs) => carried_over(&state, &old_log, parse(&hs)?)?,
                None => {
                    let mut origin = Origin::default();
                    if let LogStart::NewCluster { voters } = &start {
                        conf_state.set_voters(voters.clone());
                        origin.prev_index = 1;
                        origin.prev_term = 1;
                        origin.hard_state.set_term(1);
                        origin.hard_state.set_commit(1);
                    }
                    state.insert(CONF_STATE, write(&conf_state)?)?;
                    db.flush()?;
                    (origin, vec![])
                }
            };
            Wal::create(wal_dir, &origin, &entries)?;
        }
        // The older layout's keys are gone once the WAL holds the log.
        if state.contains_key(OLD_HARD_STATE)? || !old_log.is_empty() {
            old_log.clear()?;
            state.remove(OLD_HARD_STATE)?;
            state.remove(OLD_TRUNCATED)?;
            db.flush()?;
        }
        let mut wal = Wal::open(wal_dir)?;
        let interrupted_install = state.contains_key(INSTALLING)?;
        if interrupted_install {
            // A crash while installing a snapshot: the table is not trustworthy. Keep term and
            // vote (raft safety), forget the log, and let the leader send a snapshot again.
            let mut hard_state = wal.hard_state().clone();
            hard_state.set_commit(0);
            wal.reset(&Origin {
                prev_index: 0,
                prev_term: 0,
                hard_state,
            })?;
            conf_state = ConfState::default();
            state.insert(CONF_STATE, write(&conf_state)?)?;
            db.flush()?;
        }
        Ok(LogStore {
            wal: Mutex::new(wal),
            state,
            conf_state: Mutex::new(conf_state),
            recent: Mutex::new(Recent::default()),
            snapshot_source: None,
            interrupted_install,
        })
    }

    /// Where snapshots for lagging members come from (the table, at its applied index).
    pub fn set_snapshot_source(&mut self, source: SnapshotSource) {
        self.snapshot_source = Some(source);
    }

    /// Appends entries, replacing any conflicting tail; durable after the next [`sync`].
    ///
    /// [`sync`]: LogStore::sync
    pub fn append(&self, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        lock(&self.wal).append(entries)?;
        lock(&self.recent).extend(entries);
        Ok(())
    }

    /// Makes appended entries and hard states durable.
    pub fn sync(&self) -> Result<()> {
        lock(&self.wal).sync()
    }

    /// Records a hard state; written and durable with the next [`LogStore::sync`] (a commit
    /// index needs no sync of its own: it is raised to the table's applied index at start).
    pub fn set_hard_state(&self, hs: &HardState) -> Result<()> {
        lock(&self.wal).set_hard_state(hs)
    }

    pub fn set_commit(&self, commit: u64) -> Result<()> {
        let mut hs = self.hard_state();
        if hs.commit == commit {
            return Ok(());
        }
        hs.set_commit(commit);
        self.set_hard_state(&hs)
    }

    fn hard_state(&self) -> HardState {
        lock(&self.wal).hard_state().clone()
    }

    /// Raises the persisted commit index to at least `index` (an index known to be committed).
    pub fn raise_commit_to(&self, index: u64) -> Result<()> {
        let last = lock(&self.wal).last_index();
        if self.hard_state().commit < index && index <= last {
            self.set_commit(index)?;
            self.sync()?;
        }
        Ok(())
    }

    /// Records the conf state (with the table, which flushes it).
    pub fn set_conf_state(&self, cs: &ConfState) -> Result<()> {
        self.state.insert(CONF_STATE, write(cs)?)?;
        *lock(&self.conf_state) = cs.clone();
        Ok(())
    }

    pub fn conf_state(&self) -> ConfState {
        lock(&self.conf_state).clone()
    }

    /// Drops entries up to and including `index` (already applied); their files go once the
    /// table is durable past them (`durable`: its applied index at its last flush).
    pub fn compact(&self, index: u64, durable: u64) -> Result<()> {
        lock(&self.wal).compact(index, durable)?;
        lock(&self.recent).forget_through(index);
        Ok(())
    }

    /// Marks the start of a snapshot install (see `LogStore::open`); durable once the table
    /// is flushed.
    pub fn begin_snapshot_install(&self) -> Result<()> {
        self.state.insert(INSTALLING, &[])?;
        Ok(())
    }

    /// After an interrupted install: the table was emptied, the member waits for a snapshot.
    pub fn end_interrupted_install(&self) -> Result<()> {
        self.state.remove(INSTALLING)?;
        Ok(())
    }

    /// Replaces the log by a snapshot received from the leader (the table was installed and
    /// flushed first), ending the install.
    pub fn apply_snapshot(&self, meta: &SnapshotMetadata) -> Result<()> {
        let mut hard_state = self.hard_state();
        if hard_state.commit < meta.index {
            hard_state.set_commit(meta.index);
        }
        if hard_state.term < meta.term {
            hard_state.set_term(meta.term);
        }
        lock(&self.wal).reset(&Origin {
            prev_index: meta.index,
            prev_term: meta.term,
            hard_state,
        })?;
        *lock(&self.recent) = Recent::default();
        self.set_conf_state(meta.get_conf_state())?;
        self.state.remove(INSTALLING)?;
        Ok(())
    }

    /// The (index, term) a snapshot of the table at `applied` would carry.
    pub fn snapshot_point(&self, applied: u64) -> raft::Result<(u64, u64)> {
        let index = applied.max(lock(&self.wal).origin().0);
        Ok((index, self.term(index)?))
    }

    pub fn first_index_now(&self) -> u64 {
        lock(&self.wal).origin().0 + 1
    }

    /// Index of the last entry in the log.
    pub fn last_index_now(&self) -> u64 {
        lock(&self.wal).last_index()
    }

    /// Entries `low..high` from memory, when all of them are there.
    fn recent_entries(&self, low: u64, high: u64, max_size: u64) -> Option<Vec<Entry>> {
        let recent = lock(&self.recent);
        let first = recent.first()?;
        if low < first || recent.get(high - 1).is_none() {
            return None;
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for e in recent
            .entries
            .range((low - first) as usize..(high - first) as usize)
        {
            size += u64::from(protobuf::Message::compute_size(e));
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }
}

/// The log an older raftkine kept in sled: (its origin and hard state, its entries).
fn carried_over(
    state: &sled::Tree,
    old_log: &sled::Tree,
    hard_state: HardState,
) -> Result<(Origin, Vec<Entry>)> {
    let (prev_index, prev_term) = match state.get(OLD_TRUNCATED)? {
        Some(b) if b.len() == 16 => (
            u64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8])),
            u64::from_be_bytes(b[8..].try_into().unwrap_or([0; 8])),
        ),
        _ => (0, 0),
    };
    let mut entries = vec![];
    for item in old_log.iter() {
        let (_, v) = item?;
        let e: Entry = parse(&v)?;
        if e.index > prev_index {
            entries.push(e);
        }
    }
    tracing::info!(
        entries = entries.len(),
        "moving the raft log from the table into the write-ahead log"
    );
    Ok((
        Origin {
            prev_index,
            prev_term,
            hard_state,
        },
        entries,
    ))
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
        Ok(RaftState::new(self.hard_state(), self.conf_state()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let wal = lock(&self.wal);
        let (first, last) = (wal.origin().0 + 1, wal.last_index());
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > last + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        drop(wal);
        if let Some(found) = self.recent_entries(low, high, max_size) {
            return Ok(found);
        }
        let wal = lock(&self.wal);
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for index in low..high {
            let e = wal.read_entry(index).map_err(storage_err)?;
            size += u64::from(protobuf::Message::compute_size(&e));
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let wal = lock(&self.wal);
        let (prev_index, _) = wal.origin();
        if idx < prev_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        wal.term(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index_now())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_now())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("command {index}").into_bytes().into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_log_kept_in_sled_by_an_older_version_moves_into_the_wal() {
        let tmp = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(tmp.path().join("db"))
            .open()
            .unwrap();
        let state = db.open_tree("raft_state").unwrap();
        let old_log = db.open_tree("raft_log").unwrap();
        let hs = HardState {
            term: 4,
            vote: 9,
            commit: 12,
            ..Default::default()
        };
        state.insert(OLD_HARD_STATE, write(&hs).unwrap()).unwrap();
        let mut truncated = 10u64.to_be_bytes().to_vec();
        truncated.extend_from_slice(&3u64.to_be_bytes());
        state.insert(OLD_TRUNCATED, truncated).unwrap();
        let cs = ConfState {
            voters: vec![9],
            ..Default::default()
        };
        state.insert(CONF_STATE, write(&cs).unwrap()).unwrap();
        for i in 11u64..=13 {
            old_log
                .insert(i.to_be_bytes(), write(&entry(i, 4)).unwrap())
                .unwrap();
        }

        let wal = wal_dir(tmp.path());
        let log = LogStore::open(&db, &wal, LogStart::Join).unwrap();
        let check = |log: &LogStore| {
            let state = log.initial_state().unwrap();
            assert_eq!(state.hard_state, hs);
            assert_eq!(state.conf_state.voters, vec![9]);
            assert_eq!(log.first_index().unwrap(), 11);
            assert_eq!(log.last_index().unwrap(), 13);
            assert_eq!(log.term(10).unwrap(), 3);
            let entries = log
                .entries(11, 14, None, GetEntriesContext::empty(false))
                .unwrap();
            assert_eq!(entries, vec![entry(11, 4), entry(12, 4), entry(13, 4)]);
        };
        check(&log);
        assert!(old_log.is_empty());
        assert!(!state.contains_key(OLD_HARD_STATE).unwrap());
        drop(log);
        // Opened again, it reads the WAL (the sled trees are empty now).
        check(&LogStore::open(&db, &wal, LogStart::Join).unwrap());
    }

    #[test]
    fn a_new_cluster_starts_with_a_snapshot_at_index_1_and_entries_come_back_from_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(tmp.path().join("db"))
            .open()
            .unwrap();
        let wal = wal_dir(tmp.path());
        let log = LogStore::open(&db, &wal, LogStart::NewCluster { voters: vec![5] }).unwrap();
        assert_eq!(log.first_index().unwrap(), 2);
        assert_eq!(log.term(1).unwrap(), 1);
        assert_eq!(log.conf_state().voters, vec![5]);
        let many: Vec<Entry> = (2..2 + RECENT_ENTRIES as u64 + 10)
            .map(|i| entry(i, 1))
            .collect();
        log.append(&many).unwrap();
        log.sync().unwrap();
        // The oldest of them are no longer in memory: read back from the segment.
        let got = log
            .entries(2, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got, many[..3].to_vec());
    }
}
