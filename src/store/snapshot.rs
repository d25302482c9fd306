//! Serialising the revision table for Maintenance.Snapshot.
//!
//! Format (raftkine's own, version 1): the magic line `raftkine-snapshot-v1\n`, then every entry
//! of the table as `u32 key length, key, u32 value length, value` (big-endian), then a CRC-32 of
//! everything before it. etcd's bbolt snapshot format is not produced yet.

use super::Store;
use crate::error::Result;

pub const SNAPSHOT_MAGIC: &[u8] = b"raftkine-snapshot-v1\n";

impl Store {
    /// The whole table as a snapshot blob.
    pub fn export_snapshot(&self) -> Result<Vec<u8>> {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        for item in self.table.iter() {
            let (k, v) = item?;
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(&k);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(&v);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        Ok(out)
    }
}
