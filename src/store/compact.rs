//! Compaction: dropping history that no read at or above the compaction revision can see.
//!
//! At revision C, etcd keeps, per key, the newest row at or below C (unless it is a tombstone)
//! and every row above C. Rows written at or below the previous compaction were already pruned
//! to that shape, so only keys written since then need work: the cost follows the churn since
//! the last compaction, not the size of the store. Which keys those are comes from the row
//! owners (`schema.rs`), and the owners of the rows removed are removed with them.

use std::collections::{BTreeMap, BTreeSet};

use super::index::Change;
use super::schema::*;
use super::Store;
use crate::error::{Error, Result};

/// Owners entries read during one compaction, by entry key, and the rows each loses.
#[derive(Default)]
struct OwnerEntries {
    read: BTreeMap<Vec<u8>, Vec<Owner>>,
    disowned: BTreeMap<Vec<u8>, BTreeSet<Rev>>,
}

impl OwnerEntries {
    /// The key of the entry read so far that holds the row at `rev`, if any.
    fn holding(&self, rev: Rev) -> Option<Vec<u8>> {
        let (key, owners) = self.read.range(owners_key(rev)..).next()?;
        owners
            .binary_search_by_key(&rev, |o| o.rev)
            .is_ok()
            .then(|| key.clone())
    }

    /// Marks the owner of the row at `rev` for removal, reading its entry from the table if
    /// needed (the first entry at or after `rev` holds it; see `schema.rs`).
    fn disown(&mut self, store: &Store, rev: Rev) -> Result<()> {
        let key = match self.holding(rev) {
            Some(key) => key,
            None => {
                let found = store
                    .table
                    .range(owners_key(rev)..owners_key(Rev::new(i64::MAX, i64::MAX)))
                    .next()
                    .transpose()?;
                let Some((key, value)) = found else {
                    return Err(Error::Corrupt(format!("no owner for row {}", rev.main)));
                };
                let owners =
                    decode_owners(&value).ok_or_else(|| Error::Corrupt("row owners".into()))?;
                self.read.entry(key.to_vec()).or_insert(owners);
                key.to_vec()
            }
        };
        self.disowned.entry(key).or_default().insert(rev);
        Ok(())
    }

    /// The entries that lost rows, written back (removed once they own no row).
    fn write_back(mut self, batch: &mut super::apply::Writes) {
        for (key, revs) in self.disowned {
            let Some(mut owners) = self.read.remove(&key) else {
                continue;
            };
            owners.retain(|o| !revs.contains(&o.rev));
            if owners.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, encode_owners(&owners));
            }
        }
    }
}

impl Store {
    /// Adds to `batch` the removal of every row made invisible by compacting at `revision`
    /// (and of their owners and their versions in the key index).
    pub(crate) fn prune_history(
        &self,
        previous: i64,
        revision: i64,
        batch: &mut super::apply::Writes,
    ) -> Result<()> {
        let mut touched = BTreeSet::new();
        let mut entries = OwnerEntries::default();
        let from = owners_key(Rev::new(previous + 1, 0));
        let to = owners_key(Rev::new(i64::MAX, i64::MAX));
        for item in self.table.range(from..to) {
            let (key, value) = item?;
            let owners =
                decode_owners(&value).ok_or_else(|| Error::Corrupt("row owners".into()))?;
            if owners.first().is_some_and(|o| o.rev.main > revision) {
                break;
            }
            for o in &owners {
                if o.rev.main > previous && o.rev.main <= revision {
                    touched.insert(o.key.clone());
                }
            }
            entries.read.insert(key.to_vec(), owners);
        }
        let keys = self.index.read();
        for key in touched {
            for rev in keys.compaction_victims(&key, revision) {
                batch.remove(row_key(rev));
                entries.disown(self, rev)?;
                batch.index(Change::Forget(key.clone(), rev));
            }
        }
        entries.write_back(batch);
        Ok(())
    }
}
