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

/// Owners entries read during one compaction, by entry key, and whether they changed.
#[derive(Default)]
struct OwnerEntries(BTreeMap<Vec<u8>, (Vec<Owner>, bool)>);

impl OwnerEntries {
    /// Removes the owner of the row at `rev`, reading its entry from the table if needed
    /// (the first entry at or after `rev` holds it; see `schema.rs`).
    fn disown(&mut self, store: &Store, rev: Rev) -> Result<()> {
        let holding = |entries: &BTreeMap<Vec<u8>, (Vec<Owner>, bool)>| {
            entries
                .range(owners_key(rev)..)
                .next()
                .filter(|(_, (owners, _))| owners.iter().any(|o| o.rev == rev))
                .map(|(k, _)| k.clone())
        };
        let key = match holding(&self.0) {
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
                self.0.entry(key.to_vec()).or_insert((owners, false));
                key.to_vec()
            }
        };
        if let Some((owners, changed)) = self.0.get_mut(&key) {
            let before = owners.len();
            owners.retain(|o| o.rev != rev);
            *changed |= owners.len() != before;
        }
        Ok(())
    }

    /// The changed entries written back (removed once they own no row).
    fn write_back(self, batch: &mut super::apply::Writes) {
        for (key, (owners, changed)) in self.0 {
            if !changed {
                continue;
            }
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
            entries.0.insert(key.to_vec(), (owners, false));
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
