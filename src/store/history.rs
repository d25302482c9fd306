//! Reading applied history back in revision order: watch catch-up and consistency hashes.

use super::schema::*;
use super::Store;
use crate::error::{Error, Result};
use crate::proto::mvccpb::{event::EventType, Event};

impl Store {
    /// Events of revisions `from..=to` in (main, sub) order, each with its prev_kv, as the watch
    /// hub would have published them. Fails with `Compacted` when `from` is below the compaction.
    pub fn events_between(&self, from: i64, to: i64) -> Result<Vec<(i64, Event)>> {
        if from < self.compact_revision() {
            return Err(Error::Compacted);
        }
        let mut out = vec![];
        if from > to {
            return Ok(out);
        }
        let lower = row_key(Rev::new(from, 0));
        let upper = row_key(Rev::new(to, i64::MAX));
        for item in self.table.range(lower..=upper) {
            let (k, row) = item?;
            let rev = Rev::from_bytes(&k[1..]).ok_or_else(|| Error::Corrupt("row key".into()))?;
            let kv = Store::decode_row(&row)?;
            let kind = if kv.version == 0 {
                EventType::Delete
            } else {
                EventType::Put
            };
            // etcd gives no prev_kv to create events, else the value before the transaction.
            let created = kind == EventType::Put && kv.create_revision == kv.mod_revision;
            let prev_kv = if created {
                None
            } else {
                self.row_before(&kv.key, rev)?
            };
            out.push((
                rev.main,
                Event {
                    r#type: kind as i32,
                    kv: Some(kv),
                    prev_kv,
                },
            ));
        }
        if from < self.compact_revision() {
            return Err(Error::Compacted);
        }
        Ok(out)
    }

    /// A CRC-32 of all history rows at or below `revision` (etcd's HashKV role: equal on
    /// replicas that applied the same commands). Returns (hash, compact revision).
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64)> {
        let mut hasher = crc32fast::Hasher::new();
        let compact = self.compact_revision();
        hasher.update(&encode_i64(compact));
        let upper = row_key(Rev::new(revision, i64::MAX));
        for item in self.table.range(vec![ROW]..=upper) {
            let (k, v) = item?;
            hasher.update(&k);
            hasher.update(&v);
        }
        Ok((hasher.finalize(), compact))
    }

    /// A CRC-32 of the whole revision table (etcd's Hash role), without the row owners: they
    /// are derived from the rows, and a member that rebuilt them groups them differently.
    pub fn hash_all(&self) -> Result<u32> {
        let mut hasher = crc32fast::Hasher::new();
        for item in self.table.iter() {
            let (k, v) = item?;
            if k.first() == Some(&ROW_OWNER) || k == META_OWNERS_STATE {
                continue;
            }
            hasher.update(&k);
            hasher.update(&v);
        }
        Ok(hasher.finalize())
    }
}
