//! The raft write-ahead log: entries and hard states appended to segment files under
//! `<storage-dir>/wal/`, made durable by one `fdatasync` of one file per Ready (group commit).
//! The revision table in sled is flushed lazily, on its own schedule; after a crash the entries
//! it had not flushed yet are applied again from here.
//!
//! A segment is `{seq:016x}.wal`, preallocated to [`SEGMENT_BYTES`] (so a sync rarely has file
//! metadata to write), holding records `[u32 length][u32 crc32][u8 type][payload]` (big-endian;
//! the length counts type and payload, the CRC covers them). Types:
//! - `START`: the first record of every segment: the index and term of the entry before the
//!   segment's first one, and the hard state when the segment began. A `START` that does not
//!   continue the log read so far (a snapshot was installed) discards everything before it.
//! - `ENTRY`: a raft entry (protobuf). An entry whose index is at or below the last one read
//!   replaces that part of the log (raft overwrote a conflicting, uncommitted tail).
//! - `HARD_STATE`: term, vote and commit (protobuf); the last one read wins.
//!
//! Reading stops at the first record that is short, zero (preallocated space) or fails its
//! CRC: a write torn by a crash ends the log there. Segments wholly below the compaction point
//! are deleted once the table is durable past them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::{Entry, HardState};

use crate::error::{Error, Result};

/// Size a segment is preallocated to; a new segment starts once the active one is past it.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

const START: u8 = 1;
const ENTRY: u8 = 2;
const HARD_STATE: u8 = 3;
const HEADER: usize = 9;

/// Where an entry's record is, and its term (so `term()` needs no disk read).
#[derive(Clone, Copy, Debug)]
struct Location {
    segment: u64,
    offset: u64,
    len: u32,
    term: u64,
}

/// One segment file: its sequence number, handle, and the index its START record names as the
/// entry before the segment's first.
struct Segment {
    seq: u64,
    file: File,
    start_prev: u64,
}

/// The log on disk and the index of where each entry is.
pub struct Wal {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// Offset in the active (last) segment where the next record goes.
    write_offset: u64,
    /// Records appended but not yet written to the file.
    pending: Vec<u8>,
    /// Index and term of the entry before the first one kept.
    prev_index: u64,
    prev_term: u64,
    /// Locations of entries `prev_index + 1 ..`.
    locations: std::collections::VecDeque<Location>,
    hard_state: HardState,
}

/// What reading one segment found.
struct Replayed {
    /// Where its valid records end.
    end: u64,
    /// The entry before its first, as its START names it.
    start_prev: u64,
    /// Whether its START continued the log read before it.
    continued: bool,
}

/// What a new log starts from: the entry before the first one, and the hard state.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub prev_index: u64,
    pub prev_term: u64,
    pub hard_state: HardState,
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("raft log: {what}"))
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

/// Makes a directory's entries (new or removed files) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn encode_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    out.extend_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
    out.extend_from_slice(&hasher.finalize().to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

fn start_payload(origin: &Origin) -> Result<Vec<u8>> {
    let mut payload = origin.prev_index.to_be_bytes().to_vec();
    payload.extend_from_slice(&origin.prev_term.to_be_bytes());
    payload.extend_from_slice(&write_message(&origin.hard_state)?);
    Ok(payload)
}

fn write_message<M: protobuf::Message>(m: &M) -> Result<Vec<u8>> {
    m.write_to_bytes()
        .map_err(|e| corrupt(format!("encoding: {e}")))
}

/// The next valid record of `data` at `offset`: (type, payload, record length).
fn next_record(data: &[u8], offset: usize) -> Option<(u8, &[u8], usize)> {
    let header = data.get(offset..offset + HEADER)?;
    let len = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
    if len == 0 {
        return None;
    }
    let crc = u32::from_be_bytes(header[4..8].try_into().ok()?);
    let body = data.get(offset + 8..offset + 8 + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some((body[0], &body[1..], 8 + len))
}

impl Wal {
    /// Whether `dir` holds a log.
    pub fn exists(dir: &Path) -> bool {
        dir.is_dir()
    }

    /// Creates a log in `dir` (which must not exist) starting at `origin`. The log is made in
    /// a staging directory and renamed into place, so a crash leaves either no log or a whole
    /// one. `entries` (a log carried over from an older layout) follow the origin.
    pub fn create(dir: &Path, origin: &Origin, entries: &[Entry]) -> Result<()> {
        let mut staging = dir.as_os_str().to_os_string();
        staging.push(".new");
        let staging = PathBuf::from(staging);
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir_all(&staging)?;
        let mut records = vec![];
        encode_record(&mut records, START, &start_payload(origin)?);
        for e in entries {
            encode_record(&mut records, ENTRY, &write_message(e)?);
        }
        let file = new_segment_file(&segment_path(&staging, 1))?;
        file.write_all_at(&records, 0)?;
        file.sync_all()?;
        sync_dir(&staging)?;
        std::fs::rename(&staging, dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Opens the log in `dir` and reads where every entry is.
    pub fn open(dir: &Path) -> Result<Wal> {
        let mut seqs = vec![];
        for item in std::fs::read_dir(dir)? {
            let name = item?.file_name();
            let name = name.to_string_lossy();
            if let Some(hex) = name.strip_suffix(".wal") {
                if let Ok(seq) = u64::from_str_radix(hex, 16) {
                    seqs.push(seq);
                }
            }
        }
        seqs.sort_unstable();
        if seqs.is_empty() {
            return Err(corrupt(format!("no segment in {}", dir.display())));
        }
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segments: vec![],
            write_offset: 0,
            pending: vec![],
            prev_index: 0,
            prev_term: 0,
            locations: Default::default(),
            hard_state: HardState::default(),
        };
        // Segments before the last START that did not continue the log were discarded by a
        // reset (a crash came before they were deleted).
        let mut reset_at = 0;
        for seq in seqs {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(segment_path(dir, seq))?;
            let replayed = wal.replay(seq, &file)?;
            if !replayed.continued {
                reset_at = seq;
            }
            wal.write_offset = replayed.end;
            wal.segments.push(Segment {
                seq,
                file,
                start_prev: replayed.start_prev,
            });
        }
        wal.remove_segments_before(reset_at)?;
        Ok(wal)
    }

    /// Reads one segment's records into the index.
    fn replay(&mut self, seq: u64, file: &File) -> Result<Replayed> {
        let mut reader = SegmentReader::new(file)?;
        let mut offset = 0;
        let mut replayed = Replayed {
            end: 0,
            start_prev: 0,
            continued: true,
        };
        while let Some((kind, payload, record_len)) = reader.record(offset as u64)? {
            match kind {
                START => {
                    if payload.len() < 16 {
                        return Err(corrupt(format!("short START record in segment {seq}")));
                    }
                    let prev_index = u64::from_be_bytes(payload[..8].try_into().unwrap_or([0; 8]));
                    let prev_term = u64::from_be_bytes(payload[8..16].try_into().unwrap_or([0; 8]));
                    let continues = !self.segments.is_empty()
                        && prev_index == self.last_index()
                        && self.term(prev_index) == Some(prev_term);
                    replayed.start_prev = prev_index;
                    replayed.continued = continues;
                    if !continues {
                        self.prev_index = prev_index;
                        self.prev_term = prev_term;
                        self.locations.clear();
                    }
                    self.hard_state = HardState::parse_from_bytes(&payload[16..])
                        .map_err(|e| corrupt(format!("hard state: {e}")))?;
                }
                ENTRY => {
                    let entry = Entry::parse_from_bytes(payload)
                        .map_err(|e| corrupt(format!("entry: {e}")))?;
                    self.index_entry(&entry, seq, offset as u64, record_len as u32)?;
                }
                HARD_STATE => {
                    self.hard_state = HardState::parse_from_bytes(payload)
                        .map_err(|e| corrupt(format!("hard state: {e}")))?;
                }
                other => return Err(corrupt(format!("record type {other} in segment {seq}"))),
            }
            offset += record_len;
        }
        if offset == 0 {
            return Err(corrupt(format!("segment {seq} has no START record")));
        }
        replayed.end = offset as u64;
        Ok(replayed)
    }

    /// Records where `entry` is, replacing any entries at or after its index.
    fn index_entry(&mut self, entry: &Entry, segment: u64, offset: u64, len: u32) -> Result<()> {
        if entry.index <= self.prev_index {
            return Ok(());
        }
        if entry.index > self.last_index() + 1 {
            return Err(corrupt(format!(
                "entry {} follows entry {}",
                entry.index,
                self.last_index()
            )));
        }
        self.locations
            .truncate((entry.index - self.prev_index - 1) as usize);
        self.locations.push_back(Location {
            segment,
            offset,
            len,
            term: entry.term,
        });
        Ok(())
    }

    /// Index of the last entry (the entry before the first when there is none).
    pub fn last_index(&self) -> u64 {
        self.prev_index + self.locations.len() as u64
    }

    /// Index and term of the entry before the first one kept.
    pub fn origin(&self) -> (u64, u64) {
        (self.prev_index, self.prev_term)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Term of entry `index`, if the log holds it (or it is the origin).
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.prev_index {
            return Some(self.prev_term);
        }
        let i = index.checked_sub(self.prev_index + 1)?;
        self.locations.get(i as usize).map(|l| l.term)
    }

    /// Reads entry `index` from its segment.
    pub fn read_entry(&self, index: u64) -> Result<Entry> {
        let i = index
            .checked_sub(self.prev_index + 1)
            .ok_or_else(|| corrupt(format!("entry {index} is compacted")))?;
        let loc = *self
            .locations
            .get(i as usize)
            .ok_or_else(|| corrupt(format!("entry {index} is past the end")))?;
        if let Some(start) = self.pending_start(loc.segment) {
            if loc.offset >= start {
                let at = (loc.offset - start) as usize;
                return decode_entry(self.pending.get(at..at + loc.len as usize), index);
            }
        }
        let segment = self
            .segments
            .iter()
            .find(|s| s.seq == loc.segment)
            .ok_or_else(|| corrupt(format!("segment of entry {index} is gone")))?;
        let mut record = vec![0u8; loc.len as usize];
        segment.file.read_exact_at(&mut record, loc.offset)?;
        decode_entry(Some(&record), index)
    }

    /// Where the unwritten records begin, if they belong to `segment`.
    fn pending_start(&self, segment: u64) -> Option<u64> {
        let active = self.segments.last()?;
        (active.seq == segment && !self.pending.is_empty()).then_some(self.write_offset)
    }

    /// Appends entries (written with the next [`Wal::sync`]).
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let segment = self.active_seq()?;
        for e in entries {
            let offset = self.write_offset + self.pending.len() as u64;
            let before = self.pending.len();
            encode_record(&mut self.pending, ENTRY, &write_message(e)?);
            let len = (self.pending.len() - before) as u32;
            self.index_entry(e, segment, offset, len)?;
        }
        Ok(())
    }

    /// Records a hard state (written and durable with the next sync).
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<()> {
        encode_record(&mut self.pending, HARD_STATE, &write_message(hs)?);
        self.hard_state = hs.clone();
        Ok(())
    }

    fn active_seq(&self) -> Result<u64> {
        self.segments
            .last()
            .map(|s| s.seq)
            .ok_or_else(|| corrupt("no active segment"))
    }

    /// Writes what was appended and makes it durable; starts a new segment when the active
    /// one is full.
    pub fn sync(&mut self) -> Result<()> {
        self.write_pending()?;
        if let Some(active) = self.segments.last() {
            active.file.sync_data()?;
        }
        if self.write_offset >= SEGMENT_BYTES {
            self.start_segment()?;
        }
        Ok(())
    }

    /// Writes what was appended, without waiting for the disk.
    fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let active = self
            .segments
            .last()
            .ok_or_else(|| corrupt("no active segment"))?;
        active.file.write_all_at(&self.pending, self.write_offset)?;
        self.write_offset += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Begins a new segment continuing the log.
    fn start_segment(&mut self) -> Result<()> {
        let origin = Origin {
            prev_index: self.last_index(),
            prev_term: self.term(self.last_index()).unwrap_or(self.prev_term),
            hard_state: self.hard_state.clone(),
        };
        self.open_segment(&origin)
    }

    fn open_segment(&mut self, origin: &Origin) -> Result<()> {
        self.write_pending()?;
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let file = new_segment_file(&segment_path(&self.dir, seq))?;
        let mut records = vec![];
        encode_record(&mut records, START, &start_payload(origin)?);
        file.write_all_at(&records, 0)?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            seq,
            file,
            start_prev: origin.prev_index,
        });
        self.write_offset = records.len() as u64;
        Ok(())
    }

    /// Replaces the whole log by an empty one starting after `origin` (a snapshot was
    /// installed, or an interrupted install is abandoned). Durable on return.
    pub fn reset(&mut self, origin: &Origin) -> Result<()> {
        self.pending.clear();
        self.open_segment(origin)?;
        self.prev_index = origin.prev_index;
        self.prev_term = origin.prev_term;
        self.locations.clear();
        self.hard_state = origin.hard_state.clone();
        let active = self.active_seq()?;
        self.remove_segments_before(active)
    }

    /// Forgets entries up to and including `index` (their term is kept as the origin's) and
    /// deletes the segments holding nothing after `durable` (the table is flushed past it).
    pub fn compact(&mut self, index: u64, durable: u64) -> Result<()> {
        if index > self.prev_index && index <= self.last_index() {
            let term = self.term(index).unwrap_or(self.prev_term);
            let drop = (index - self.prev_index) as usize;
            self.locations.drain(..drop);
            self.prev_index = index;
            self.prev_term = term;
        }
        match self.first_kept_segment(index.min(durable)) {
            Some(seq) => self.remove_segments_before(seq),
            None => Ok(()),
        }
    }

    /// The oldest segment to keep when entries up to `keep_after` are no longer needed: the
    /// newest segment `k` such that every entry before those of `k` and later is at most
    /// `keep_after`, and no entry of `k` or later lies at or below the index `k`'s START
    /// names (a segment whose entries overwrote older ones must keep its predecessors, or it
    /// would not read back).
    fn first_kept_segment(&self, keep_after: u64) -> Option<u64> {
        // Live entries are in index order with non-decreasing segment numbers: the first live
        // index of each segment, and of everything from a segment on.
        let mut first_live = std::collections::HashMap::new();
        for (i, loc) in self.locations.iter().enumerate() {
            first_live
                .entry(loc.segment)
                .or_insert(self.prev_index + 1 + i as u64);
        }
        let mut from_here_on = self.last_index() + 1;
        let mut best = None;
        for segment in self.segments.iter().rev() {
            if let Some(&first) = first_live.get(&segment.seq) {
                from_here_on = first;
            }
            if from_here_on - 1 <= keep_after && from_here_on > segment.start_prev {
                best = Some(segment.seq);
                break;
            }
        }
        best
    }

    fn remove_segments_before(&mut self, seq: u64) -> Result<()> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.segments)
            .into_iter()
            .partition(|s| s.seq < seq);
        self.segments = kept;
        if gone.is_empty() {
            return Ok(());
        }
        for s in gone {
            std::fs::remove_file(segment_path(&self.dir, s.seq))?;
        }
        sync_dir(&self.dir)
    }

    /// Number of segment files (tests and status).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

fn decode_entry(record: Option<&[u8]>, index: u64) -> Result<Entry> {
    let record = record.ok_or_else(|| corrupt(format!("entry {index} out of bounds")))?;
    match next_record(record, 0) {
        Some((ENTRY, payload, _)) => {
            Entry::parse_from_bytes(payload).map_err(|e| corrupt(format!("entry {index}: {e}")))
        }
        _ => Err(corrupt(format!("entry {index} does not read back"))),
    }
}

/// Reads a segment front to back through a buffer of about [`SegmentReader::CHUNK`] bytes
/// (a segment is mostly preallocated zeros; reading stops at the first).
struct SegmentReader<'f> {
    file: &'f File,
    len: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
}

impl<'f> SegmentReader<'f> {
    const CHUNK: usize = 1 << 20;

    fn new(file: &'f File) -> Result<SegmentReader<'f>> {
        Ok(SegmentReader {
            file,
            len: file.metadata()?.len(),
            buf: vec![],
            start: 0,
        })
    }

    /// Bytes `offset..offset + n` of the file, None past its end.
    fn get(&mut self, offset: u64, n: usize) -> Result<Option<&[u8]>> {
        if offset + n as u64 > self.len {
            return Ok(None);
        }
        if offset < self.start || offset + n as u64 > self.start + self.buf.len() as u64 {
            let want = n.max(Self::CHUNK).min((self.len - offset) as usize);
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, offset)?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(Some(&self.buf[at..at + n]))
    }

    /// The valid record at `offset`: (type, payload, record length); None where the log ends.
    fn record(&mut self, offset: u64) -> Result<Option<(u8, &[u8], usize)>> {
        let len = match self.get(offset, 4)? {
            Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize,
            None => return Ok(None),
        };
        if len == 0 {
            return Ok(None);
        }
        Ok(self
            .get(offset, 8 + len)?
            .and_then(|record| next_record(record, 0)))
    }
}

/// A new, preallocated segment file.
fn new_segment_file(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    preallocate(&file, SEGMENT_BYTES);
    Ok(file)
}

/// Reserves `len` bytes for the file (zeros), so appends within them change no file size;
/// filesystems without `fallocate` simply grow the file as it is written.
fn preallocate(file: &File, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a file descriptor owned by `file`, which outlives the call.
    let _ = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry {
            index,
            term,
            data: data.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    fn origin(prev_index: u64, prev_term: u64) -> Origin {
        Origin {
            prev_index,
            prev_term,
            hard_state: HardState::default(),
        }
    }

    /// A new log after (prev_index, prev_term), in a temporary dir kept alive by the first value.
    fn new_wal(prev_index: u64, prev_term: u64) -> (tempfile::TempDir, PathBuf, Wal) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        Wal::create(&dir, &origin(prev_index, prev_term), &[]).unwrap();
        let wal = Wal::open(&dir).unwrap();
        (tmp, dir, wal)
    }

    fn datas(wal: &Wal) -> Vec<String> {
        let (first, last) = (wal.origin().0 + 1, wal.last_index());
        (first..=last)
            .map(|i| {
                String::from_utf8(wal.read_entry(i).expect("entry").data.to_vec()).expect("utf8")
            })
            .collect()
    }

    #[test]
    fn entries_and_hard_state_survive_a_reopen() {
        let (_tmp, dir, mut wal) = new_wal(1, 1);
        wal.append(&[entry(2, 1, "a"), entry(3, 1, "b")]).unwrap();
        let hs = HardState {
            term: 2,
            vote: 7,
            commit: 3,
            ..Default::default()
        };
        wal.set_hard_state(&hs).unwrap();
        // Readable before and after it reached the file.
        assert_eq!(datas(&wal), ["a", "b"]);
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(&dir).unwrap();
        assert_eq!(wal.origin(), (1, 1));
        assert_eq!(wal.last_index(), 3);
        assert_eq!(wal.term(3), Some(1));
        assert_eq!(datas(&wal), ["a", "b"]);
        assert_eq!(wal.hard_state(), &hs);
    }

    #[test]
    fn a_conflicting_tail_is_replaced() {
        let (_tmp, dir, mut wal) = new_wal(0, 0);
        wal.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")])
            .unwrap();
        wal.sync().unwrap();
        wal.append(&[entry(2, 2, "B")]).unwrap();
        wal.sync().unwrap();
        assert_eq!(datas(&wal), ["a", "B"]);
        drop(wal);
        let wal = Wal::open(&dir).unwrap();
        assert_eq!(datas(&wal), ["a", "B"]);
        assert_eq!(wal.term(2), Some(2));
        assert_eq!(wal.term(3), None);
    }

    #[test]
    fn a_torn_tail_ends_the_log_and_is_overwritten() {
        let (_tmp, dir, mut wal) = new_wal(0, 0);
        wal.append(&[entry(1, 1, "a"), entry(2, 1, "b")]).unwrap();
        wal.sync().unwrap();
        let end = wal.write_offset;
        drop(wal);
        // Corrupt the last record's payload, as a crash in the middle of a write would.
        let path = segment_path(&dir, 1);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"\xff\xff", end - 2).unwrap();
        drop(file);
        let mut wal = Wal::open(&dir).unwrap();
        assert_eq!(datas(&wal), ["a"]);
        wal.append(&[entry(2, 1, "c")]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        assert_eq!(datas(&Wal::open(&dir).unwrap()), ["a", "c"]);
    }

    #[test]
    fn segments_roll_over_and_compaction_deletes_only_durable_ones() {
        let (_tmp, dir, mut wal) = new_wal(0, 0);
        let big = "x".repeat(1024 * 1024);
        for i in 1..=40 {
            wal.append(&[entry(i, 1, &big)]).unwrap();
            wal.sync().unwrap();
        }
        assert!(wal.segment_count() >= 3, "{}", wal.segment_count());
        let before = wal.segment_count();
        // Nothing is durable in the table yet: the entries are forgotten, no file goes.
        wal.compact(35, 0).unwrap();
        assert_eq!(wal.segment_count(), before);
        assert_eq!(wal.origin(), (35, 1));
        wal.compact(35, 35).unwrap();
        assert!(wal.segment_count() < before);
        drop(wal);
        let wal = Wal::open(&dir).unwrap();
        assert_eq!(wal.last_index(), 40);
        assert!(wal.origin().0 <= 35);
        assert_eq!(wal.read_entry(40).unwrap().data.len(), big.len());
    }

    #[test]
    fn a_reset_discards_the_log_even_if_a_crash_left_old_segments() {
        let (tmp, dir, mut wal) = new_wal(0, 0);
        wal.append(&[entry(1, 1, "a"), entry(2, 1, "b")]).unwrap();
        wal.sync().unwrap();
        wal.reset(&origin(100, 3)).unwrap();
        assert_eq!(wal.last_index(), 100);
        wal.append(&[entry(101, 3, "z")]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        // As if the crash came before the old segment was deleted: write it back.
        let old = segment_path(&dir, 1);
        Wal::create(
            &tmp.path().join("other"),
            &origin(0, 0),
            &[entry(1, 1, "a")],
        )
        .unwrap();
        std::fs::rename(segment_path(&tmp.path().join("other"), 1), &old).unwrap();
        let wal = Wal::open(&dir).unwrap();
        assert_eq!(wal.origin(), (100, 3));
        assert_eq!(datas(&wal), ["z"]);
        assert!(!old.exists());
    }
}
