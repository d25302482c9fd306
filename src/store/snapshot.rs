//! Serialising the revision table for raft snapshots (lagging members), and installing one.
//!
//! Format (raftkine's own, version 1): the magic line `raftkine-snapshot-v1\n`, the payload
//! length (u64), the payload — every entry of the table as `u32 key length, key, u32 value
//! length, value` (big-endian) — zero padding to a multiple of 512 bytes, then the SHA-256 of
//! everything before it. Maintenance.Snapshot streams etcd's own format instead (`crate::backup`).

use sha2::{Digest, Sha256};

use super::schema::*;
use super::Store;
use crate::error::{Error, Result};

pub const SNAPSHOT_MAGIC: &[u8] = b"raftkine-snapshot-v1\n";
const PAGE: usize = 512;

impl Store {
    /// The whole table as a snapshot blob, written straight from the table's iterator (the
    /// blob is the only copy of the table in memory; a list of the entries first, then the
    /// payload, then the blob held it three times over while a snapshot was taken).
    pub fn export_snapshot(&self) -> Result<Vec<u8>> {
        let mut blob = SnapshotWriter::new();
        for item in self.table.iter() {
            let (k, v) = item?;
            blob.push(&k, &v);
        }
        Ok(blob.finish())
    }
}

/// A snapshot blob holding `entries` (table keys and values, in any order).
pub fn encode_snapshot(entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Vec<u8> {
    let mut blob = SnapshotWriter::new();
    for (k, v) in entries {
        blob.push(&k, &v);
    }
    blob.finish()
}

/// Builds a blob in place: the header with room for the payload length, the entries, then
/// the length filled in, the padding and the digest.
struct SnapshotWriter {
    out: Vec<u8>,
}

impl SnapshotWriter {
    const LEN_AT: usize = SNAPSHOT_MAGIC.len();
    const PAYLOAD_AT: usize = Self::LEN_AT + 8;

    fn new() -> SnapshotWriter {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        out.extend_from_slice(&[0; 8]);
        SnapshotWriter { out }
    }

    fn push(&mut self, key: &[u8], value: &[u8]) {
        self.out.reserve(8 + key.len() + value.len());
        self.out
            .extend_from_slice(&(key.len() as u32).to_be_bytes());
        self.out.extend_from_slice(key);
        self.out
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.out.extend_from_slice(value);
    }

    fn finish(mut self) -> Vec<u8> {
        let payload_len = (self.out.len() - Self::PAYLOAD_AT) as u64;
        self.out[Self::LEN_AT..Self::PAYLOAD_AT].copy_from_slice(&payload_len.to_be_bytes());
        self.out.resize(self.out.len().div_ceil(PAGE) * PAGE, 0);
        let digest = Sha256::digest(&self.out);
        self.out.extend_from_slice(&digest);
        self.out
    }
}

impl Store {
    /// A snapshot for raft: (applied index, blob). Called on the raft thread, so no command is
    /// applied while it is taken and the blob is exactly the table at that index.
    pub fn raft_snapshot(&self) -> Result<(u64, Vec<u8>)> {
        let applied = self.applied_index();
        Ok((applied, self.export_snapshot()?))
    }

    /// Empties the table (a member whose snapshot install was interrupted starts over).
    pub fn clear(&self) -> Result<()> {
        let _locks = self.lock_commit(true);
        self.table.clear()?;
        self.reload()?;
        self.flush()
    }

    /// Replaces the whole table by a snapshot taken on another member at raft `index`. (A
    /// snapshot of an older raftkine carries its key index and live table: left out; and its
    /// revision under the older name. One without row owners gets them when it is loaded.)
    pub fn install_snapshot(&self, blob: &[u8], index: u64) -> Result<()> {
        let entries = parse_snapshot(blob)?;
        let _locks = self.lock_commit(true);
        self.table.clear()?;
        let mut batch = sled::Batch::default();
        let mut revision = 1;
        let (mut state, mut owners_state) = (None, None);
        for (k, v) in entries {
            if k == META_STATE {
                revision = decode_state(v).map_or(revision, |(_, rev)| rev);
                state = Some(v);
            } else if k == META_OWNERS_STATE {
                owners_state = Some(v);
            } else if k == OLD_META_REVISION {
                revision = decode_i64(v).unwrap_or(revision);
            } else if !matches!(k.first(), Some(&OLD_INDEX) | Some(&OLD_LIVE))
                && k != OLD_META_APPLIED
            {
                batch.insert(k, v);
            }
        }
        let installed = encode_state(index, revision);
        // The sender's owners hold for the installed table if they held for the sender's.
        if state.is_some() && state == owners_state {
            batch.insert(META_OWNERS_STATE, &installed);
        }
        batch.insert(META_STATE, &installed);
        self.table.apply_batch(batch)?;
        self.reload()
    }
}

/// Checks a snapshot blob and splits it into table entries (slices of the blob).
pub fn parse_snapshot(blob: &[u8]) -> Result<Vec<(&[u8], &[u8])>> {
    let bad = |why: &str| Error::Corrupt(format!("snapshot: {why}"));
    let header = SNAPSHOT_MAGIC.len() + 8;
    if blob.len() < header + 32 || !blob.starts_with(SNAPSHOT_MAGIC) {
        return Err(bad("not a raftkine snapshot"));
    }
    let (body, digest) = blob.split_at(blob.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err(bad("checksum mismatch"));
    }
    let len_bytes: [u8; 8] = body[SNAPSHOT_MAGIC.len()..header]
        .try_into()
        .map_err(|_| bad("truncated"))?;
    let len = u64::from_be_bytes(len_bytes) as usize;
    if body.len() < header + len {
        return Err(bad("truncated"));
    }
    let mut rest = &body[header..header + len];
    let mut out = vec![];
    /// The next length-prefixed field of `rest`; None when `rest` is too short for it.
    fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        if rest.len() < 4 {
            return None;
        }
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if tail.len() < len {
            return None;
        }
        let (value, tail) = tail.split_at(len);
        *rest = tail;
        Some(value)
    }
    while !rest.is_empty() {
        let k = take(&mut rest).ok_or_else(|| bad("truncated"))?;
        let v = take(&mut rest).ok_or_else(|| bad("truncated"))?;
        out.push((k, v));
    }
    Ok(out)
}
