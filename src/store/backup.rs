//! The whole history of the table as one value ([`History`]), for backups: taken from a running
//! store at one consistent point, and turned back into table entries for a restore.
//!
//! A [`History`] holds what etcd's snapshot carries: every revision row still held (tombstones
//! included), leases with their granted TTL, the store and compaction revisions, the applied
//! raft index, and the cluster records (members, alarms). Lease attachments (the `K` table) are
//! derived and rebuilt on restore, and so is the key index (in memory).

use std::collections::BTreeMap;

use prost::Message;

use super::schema::*;
use super::Store;
use crate::error::{Error, Result};
use crate::proto::etcdserverpb::Member;
use crate::proto::mvccpb::KeyValue;

/// The history of a store at one point. A tombstone row has `version == 0` and carries only the
/// key and its mod revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The store revision (the main revision of the last write).
    pub revision: i64,
    /// The compaction revision, -1 when never compacted.
    pub compact_revision: i64,
    /// The raft index the history was taken at.
    pub applied_index: u64,
    /// Every row, in (main, sub) order.
    pub rows: Vec<(Rev, KeyValue)>,
    /// (lease id, granted TTL), by id.
    pub leases: Vec<(i64, i64)>,
    pub members: Vec<Member>,
    /// (member id, alarm type).
    pub alarms: Vec<(u64, i32)>,
}

fn lock<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// The history as of one applied command, while the store keeps applying.
    ///
    /// Rows at or below the current revision never change except by compaction (or a snapshot
    /// install), which wait while the rows are read (`history_pin`); revision, compaction
    /// revision, applied index, leases and cluster records are read together between two
    /// commits (`commit_lock`). Writes go on meanwhile: they only add rows above the revision.
    pub fn history(&self) -> Result<History> {
        let _pin = lock(&self.history_pin);
        let (revision, compact_revision, applied_index, leases, members, alarms) = {
            let _commits = lock(&self.commit_lock);
            (
                self.revision(),
                self.compact_revision(),
                self.applied_index(),
                self.leases()?,
                self.members()?,
                self.alarms()?,
            )
        };
        let mut rows = vec![];
        let upper = row_key(Rev::new(revision, i64::MAX));
        for item in self.table.range(vec![ROW]..=upper) {
            let (k, v) = item?;
            let rev = Rev::from_bytes(&k[1..]).ok_or_else(|| Error::Corrupt("row key".into()))?;
            rows.push((rev, Store::decode_row(&v)?));
        }
        Ok(History {
            revision,
            compact_revision,
            applied_index,
            rows,
            leases,
            members,
            alarms,
        })
    }

    /// Replaces the table by `history`'s key space (see [`History::table_entries`]) as a snapshot
    /// install at raft `index`: the one way besides applying commands that the table changes.
    pub fn install_history(&self, history: &History, index: u64) -> Result<()> {
        let blob = super::snapshot::encode_snapshot(history.table_entries()?);
        self.install_snapshot(&blob, index)
    }
}

impl History {
    /// Applies a compaction at `revision` to the rows, as the store does (see `compact.rs`): per
    /// key, of the rows at or below it only the newest stays, and only if it is not a tombstone.
    pub fn compact_to(&mut self, revision: i64) {
        if revision <= self.compact_revision {
            return;
        }
        let mut newest: BTreeMap<&[u8], (Rev, bool)> = BTreeMap::new();
        for (rev, kv) in &self.rows {
            if rev.main <= revision {
                newest.insert(&kv.key, (*rev, kv.version == 0));
            }
        }
        let keep: std::collections::BTreeSet<Rev> = newest
            .values()
            .filter(|(_, tombstone)| !tombstone)
            .map(|(rev, _)| *rev)
            .collect();
        self.rows
            .retain(|(rev, _)| rev.main > revision || keep.contains(rev));
        self.compact_revision = revision;
        self.revision = self.revision.max(revision);
    }

    /// The table entries of this history's key space: rows, leases and their attached keys,
    /// the store and compaction revisions. Cluster records (members, alarms, join tokens) are
    /// not included: a restore starts a new cluster.
    pub fn table_entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::with_capacity(self.rows.len() + self.leases.len() + 4);
        let mut live: BTreeMap<&[u8], &KeyValue> = BTreeMap::new();
        let mut previous: Option<Rev> = None;
        for (rev, kv) in &self.rows {
            if previous.is_some_and(|p| p >= *rev) {
                return Err(Error::Corrupt(format!(
                    "history rows out of order at revision {}/{}",
                    rev.main, rev.sub
                )));
            }
            previous = Some(*rev);
            out.push((row_key(*rev), kv.encode_to_vec()));
            if kv.version == 0 {
                live.remove(kv.key.as_slice());
            } else {
                live.insert(&kv.key, kv);
            }
        }
        let leases: std::collections::HashSet<i64> = self.leases.iter().map(|l| l.0).collect();
        for (key, kv) in live {
            if kv.lease != 0 && leases.contains(&kv.lease) {
                out.push((lease_attachment_key(kv.lease, key), vec![]));
            }
        }
        for &(id, ttl) in &self.leases {
            out.push((lease_key(id), encode_i64(ttl).to_vec()));
        }
        // The applied index is the install's own.
        out.push((META_STATE.to_vec(), encode_state(0, self.revision).to_vec()));
        if self.compact_revision >= 0 {
            out.push((
                META_COMPACT.to_vec(),
                encode_i64(self.compact_revision).to_vec(),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Op};
    use crate::proto::etcdserverpb::{
        CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest,
    };

    fn apply(store: &Store, index: u64, op: Op) {
        store
            .apply(index, &Command::new(op))
            .expect("storage")
            .expect("command succeeds");
    }

    fn put(key: &str, value: &str, lease: i64) -> Op {
        Op::Put(PutRequest {
            key: key.into(),
            value: value.as_bytes().to_vec().into(),
            lease,
            ..Default::default()
        })
    }

    #[test]
    fn history_reinstalled_gives_the_same_rows_and_hashes() {
        let store = Store::temporary().expect("store");
        apply(
            &store,
            1,
            Op::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 60 }),
        );
        apply(&store, 2, put("a", "1", 0));
        apply(&store, 3, put("b", "2", 7));
        apply(&store, 4, put("a", "3", 0));
        apply(
            &store,
            5,
            Op::DeleteRange(DeleteRangeRequest {
                key: b"b".to_vec(),
                ..Default::default()
            }),
        );
        apply(&store, 6, put("c", "4", 7));
        apply(
            &store,
            7,
            Op::Compact(CompactionRequest {
                revision: 3,
                physical: true,
            }),
        );
        apply(&store, 8, put("d", "5", 0));
        let history = store.history().expect("history");
        assert_eq!(history.revision, 7);
        assert_eq!(history.compact_revision, 3);
        assert_eq!(history.applied_index, 8);
        assert_eq!(history.leases, vec![(7, 60)]);

        let copy = Store::temporary().expect("store");
        copy.install_history(&history, 1).expect("install");
        assert_eq!(copy.revision(), 7);
        assert_eq!(copy.compact_revision(), 3);
        assert_eq!(copy.applied_index(), 1);
        assert_eq!(
            copy.hash_kv(7).expect("hash"),
            store.hash_kv(7).expect("hash")
        );
        assert_eq!(
            copy.hash_kv(5).expect("hash"),
            store.hash_kv(5).expect("hash")
        );
        assert_eq!(copy.lease_keys(7).expect("keys"), vec![b"c".to_vec()]);
        assert_eq!(copy.history().expect("history").rows, history.rows);
    }

    #[test]
    fn compact_to_keeps_what_the_store_keeps() {
        let store = Store::temporary().expect("store");
        apply(&store, 1, put("a", "1", 0));
        apply(&store, 2, put("a", "2", 0));
        apply(&store, 3, put("b", "1", 0));
        apply(
            &store,
            4,
            Op::DeleteRange(DeleteRangeRequest {
                key: b"b".to_vec(),
                ..Default::default()
            }),
        );
        apply(&store, 5, put("a", "3", 0));
        let mut history = store.history().expect("history");
        history.compact_to(4);
        apply(
            &store,
            6,
            Op::Compact(CompactionRequest {
                revision: 4,
                physical: true,
            }),
        );
        let compacted = store.history().expect("history");
        assert_eq!(history.rows, compacted.rows);
        assert_eq!(history.compact_revision, compacted.compact_revision);
        assert_eq!(history.revision, compacted.revision);
    }
}
