//! Compaction: dropping history that no read at or above the compaction revision can see.
//!
//! At revision C, etcd keeps, per key, the newest row at or below C (unless it is a tombstone)
//! and every row above C. Rows written at or below the previous compaction were already pruned
//! to that shape, so only keys written since then need work: the cost follows the churn since
//! the last compaction, not the size of the store.

use std::collections::BTreeSet;

use super::schema::*;
use super::Store;
use crate::error::{Error, Result};

impl Store {
    /// Adds to `batch` the removal of every row made invisible by compacting at `revision`.
    pub(crate) fn prune_history(
        &self,
        previous: i64,
        revision: i64,
        batch: &mut super::apply::Writes,
    ) -> Result<()> {
        let mut touched = BTreeSet::new();
        let from = row_key(Rev::new(previous + 1, 0));
        let to = row_key(Rev::new(revision, i64::MAX));
        for item in self.table.range(from..=to) {
            let (_, row) = item?;
            touched.insert(Store::decode_row(&row)?.key);
        }
        for key in touched {
            let lower = index_prefix(&key);
            let upper = index_key(&key, Rev::new(revision, i64::MAX));
            let entries: Vec<_> = self
                .table
                .range(lower..=upper)
                .collect::<std::result::Result<_, _>>()?;
            let Some((newest, _)) = entries.last().cloned() else {
                continue;
            };
            for (ik, marker) in entries {
                let keep = ik == newest && marker.first() != Some(&1);
                if keep {
                    continue;
                }
                let (_, rev) =
                    decode_index_key(&ik).ok_or_else(|| Error::Corrupt("index key".into()))?;
                batch.remove(ik);
                batch.remove(row_key(rev));
            }
        }
        Ok(())
    }
}
