//! Compaction: dropping history that no read at or above the compaction revision can see.
//!
//! At revision C, etcd keeps, per key, the newest row at or below C (unless it is a tombstone)
//! and every row above C. Rows written at or below the previous compaction were already pruned
//! to that shape, so only keys written since then need work: the cost follows the churn since
//! the last compaction, not the size of the store.

use std::collections::BTreeSet;

use super::index::{key_of_row, Change};
use super::schema::*;
use super::Store;
use crate::error::{Error, Result};

impl Store {
    /// Adds to `batch` the removal of every row made invisible by compacting at `revision`
    /// (and of their versions in the key index).
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
            let (key, _) = key_of_row(&row).ok_or_else(|| Error::Corrupt("row".into()))?;
            touched.insert(key.to_vec());
        }
        let keys = self.index.read();
        for key in touched {
            for rev in keys.compaction_victims(&key, revision) {
                batch.remove(row_key(rev));
                batch.index(Change::Forget(key.clone(), rev));
            }
        }
        Ok(())
    }
}
