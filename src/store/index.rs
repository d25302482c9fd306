//! The key index, in memory (etcd's treeIndex): for every key, the revisions of its rows still in
//! the table, oldest first. Reads find the row of a key at any revision here and fetch it from
//! the table by revision; a write adds one row to the table and one version here. The index is
//! derived from the rows: it is rebuilt at start and after a snapshot install from the row
//! owners, which record each row's key (see `schema.rs`).
//!
//! Readers and the apply path meet at one lock: the apply path updates the index together with
//! the store revision after its batch is in the table (so every version here names a row that
//! is there), and a reader collects revisions under the same lock, then reads the rows, which
//! never change (only compaction removes rows, and only below any revision a read may still
//! ask for; see `read.rs`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use smallvec::SmallVec;

use super::read::KeyRange;
use super::schema::Rev;

/// One row of a key: its revision, and whether it is a tombstone (the key was deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    pub rev: Rev,
    pub tombstone: bool,
}

/// One key's rows, oldest first (most keys have one).
type Versions = SmallVec<[Version; 1]>;

/// A change to the index made by one applied batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A row was written.
    Add(Vec<u8>, Version),
    /// A row was removed by compaction.
    Forget(Vec<u8>, Rev),
}

/// Every key's versions, by key.
#[derive(Default)]
pub struct Keys(BTreeMap<Vec<u8>, Versions>);

impl Keys {
    /// Adds a row's version; rows must come in revision order per key.
    pub fn add(&mut self, key: &[u8], version: Version) {
        match self.0.get_mut(key) {
            Some(versions) => versions.push(version),
            None => {
                self.0.insert(key.to_vec(), SmallVec::from_elem(version, 1));
            }
        }
    }

    /// The index of every row's (key, version), given in revision order.
    pub fn from_rows(mut rows: Vec<(Vec<u8>, Version)>) -> Keys {
        // A stable sort keeps each key's versions in revision order; a BTreeMap made from
        // sorted entries is built in one pass.
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut grouped: Vec<(Vec<u8>, Versions)> = Vec::new();
        for (key, version) in rows {
            match grouped.last_mut() {
                Some((last, versions)) if *last == key => versions.push(version),
                _ => grouped.push((key, SmallVec::from_elem(version, 1))),
            }
        }
        Keys(grouped.into_iter().collect())
    }

    fn forget(&mut self, key: &[u8], rev: Rev) {
        if let Some(versions) = self.0.get_mut(key) {
            versions.retain(|v| v.rev != rev);
            if versions.is_empty() {
                self.0.remove(key);
            }
        }
    }

    pub fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Add(key, version) => self.add(key, *version),
                Change::Forget(key, rev) => self.forget(key, *rev),
            }
        }
    }

    /// The key's row visible at revision `at` (None: the latest), unless it is deleted there.
    pub fn get(&self, key: &[u8], at: Option<i64>) -> Option<Rev> {
        visible(self.0.get(key)?, at)
    }

    /// The key's newest row below main revision `main` (the value before that transaction),
    /// unless it is a tombstone.
    pub fn before(&self, key: &[u8], main: i64) -> Option<Rev> {
        let versions = self.0.get(key)?;
        let v = versions.iter().rev().find(|v| v.rev.main < main)?;
        (!v.tombstone).then_some(v.rev)
    }

    /// Calls `f(key, row)` for each key of `range` visible at `at` (None: the latest), in key
    /// order, until `f` returns false.
    pub fn scan(&self, range: &KeyRange, at: Option<i64>, mut f: impl FnMut(&[u8], Rev) -> bool) {
        match range {
            KeyRange::Single(key) => {
                if let Some(rev) = self.get(key, at) {
                    f(key, rev);
                }
            }
            KeyRange::Span { start, end } => {
                if end.as_ref().is_some_and(|e| e <= start) {
                    return;
                }
                let upper = match end {
                    Some(e) => Bound::Excluded(e.as_slice()),
                    None => Bound::Unbounded,
                };
                let span = self
                    .0
                    .range::<[u8], _>((Bound::Included(start.as_slice()), upper));
                for (key, versions) in span {
                    if let Some(rev) = visible(versions, at) {
                        if !f(key, rev) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The versions compaction at `revision` removes from `key`: of those at or below it, all
    /// but the newest, and the newest too when it is a tombstone.
    pub fn compaction_victims(&self, key: &[u8], revision: i64) -> Vec<Rev> {
        let Some(versions) = self.0.get(key) else {
            return vec![];
        };
        let at_or_below: Vec<&Version> = versions
            .iter()
            .take_while(|v| v.rev.main <= revision)
            .collect();
        let Some((newest, older)) = at_or_below.split_last() else {
            return vec![];
        };
        let mut victims: Vec<Rev> = older.iter().map(|v| v.rev).collect();
        if newest.tombstone {
            victims.push(newest.rev);
        }
        victims
    }

    /// Number of keys indexed (alive or not).
    pub fn key_count(&self) -> usize {
        self.0.len()
    }

    /// Number of keys alive at the latest revision.
    pub fn live_count(&self) -> u64 {
        self.0
            .values()
            .filter(|v| v.last().is_some_and(|v| !v.tombstone))
            .count() as u64
    }
}

/// The row of a key visible at `at` (None: the latest), unless deleted there.
fn visible(versions: &Versions, at: Option<i64>) -> Option<Rev> {
    let v = match at {
        None => versions.last()?,
        Some(rev) => versions.iter().rev().find(|v| v.rev.main <= rev)?,
    };
    (!v.tombstone).then_some(v.rev)
}

/// The shared index.
#[derive(Default)]
pub struct KeyIndex {
    keys: RwLock<Keys>,
}

impl KeyIndex {
    pub fn read(&self) -> RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Keys> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The key and whether the row is a tombstone, read from an encoded `mvccpb.KeyValue` without
/// decoding the value (rebuilding the row owners of an older table reads every row).
pub fn key_of_row(row: &[u8]) -> Option<(&[u8], bool)> {
    let mut key: &[u8] = &[];
    let mut version = 0u64;
    let mut rest = row;
    while !rest.is_empty() {
        let tag = varint(&mut rest)?;
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => {
                let v = varint(&mut rest)?;
                if field == 4 {
                    version = v;
                }
            }
            2 => {
                let len = varint(&mut rest)? as usize;
                if rest.len() < len {
                    return None;
                }
                let (bytes, tail) = rest.split_at(len);
                if field == 1 {
                    key = bytes;
                }
                rest = tail;
            }
            _ => return None,
        }
    }
    Some((key, version == 0))
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, tail) = buf.split_first()?;
        *buf = tail;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;
    use prost::Message;

    fn v(main: i64, tombstone: bool) -> Version {
        Version {
            rev: Rev::new(main, 0),
            tombstone,
        }
    }

    fn keys() -> Keys {
        let mut k = Keys::default();
        k.add(b"a", v(2, false));
        k.add(b"b", v(3, false));
        k.add(b"a", v(4, false));
        k.add(b"b", v(5, true));
        k.add(b"c", v(6, false));
        k.add(b"b", v(7, false));
        k
    }

    fn scan(k: &Keys, range: KeyRange, at: Option<i64>) -> Vec<(String, i64)> {
        let mut out = vec![];
        k.scan(&range, at, |key, rev| {
            out.push((String::from_utf8_lossy(key).into_owned(), rev.main));
            true
        });
        out
    }

    #[test]
    fn a_key_is_found_at_any_revision_and_not_while_deleted() {
        let k = keys();
        assert_eq!(k.get(b"a", None), Some(Rev::new(4, 0)));
        assert_eq!(k.get(b"a", Some(3)), Some(Rev::new(2, 0)));
        assert_eq!(k.get(b"a", Some(1)), None);
        assert_eq!(k.get(b"b", Some(5)), None);
        assert_eq!(k.get(b"b", Some(6)), None);
        assert_eq!(k.get(b"b", None), Some(Rev::new(7, 0)));
        assert_eq!(k.before(b"b", 7), None, "deleted before revision 7");
        assert_eq!(k.before(b"a", 4), Some(Rev::new(2, 0)));
        assert_eq!(k.live_count(), 3);
    }

    #[test]
    fn built_from_rows_it_equals_the_index_built_row_by_row() {
        let rows: Vec<(Vec<u8>, Version)> = [
            ("b", 2, false),
            ("a", 3, false),
            ("b", 4, true),
            ("c", 5, false),
            ("a", 6, false),
            ("b", 7, false),
        ]
        .into_iter()
        .map(|(k, main, t)| (k.as_bytes().to_vec(), v(main, t)))
        .collect();
        let mut one_by_one = Keys::default();
        for (key, version) in &rows {
            one_by_one.add(key, *version);
        }
        let built = Keys::from_rows(rows);
        assert_eq!(built.0, one_by_one.0);
        assert_eq!(built.get(b"b", Some(5)), None);
        assert_eq!(built.get(b"a", None), Some(Rev::new(6, 0)));
    }

    #[test]
    fn scans_follow_key_order_and_the_revision() {
        let k = keys();
        let all = KeyRange::new(b"a", b"\0");
        assert_eq!(
            scan(&k, all.clone(), None),
            [("a".into(), 4), ("b".into(), 7), ("c".into(), 6)]
        );
        assert_eq!(scan(&k, all, Some(5)), [("a".into(), 4)]);
        assert_eq!(
            scan(&k, KeyRange::new(b"b", b"c"), Some(3)),
            [("b".into(), 3)]
        );
        assert!(scan(&k, KeyRange::new(b"c", b"a"), None).is_empty());
    }

    #[test]
    fn compaction_keeps_the_newest_visible_row() {
        let mut k = keys();
        assert_eq!(k.compaction_victims(b"a", 4), [Rev::new(2, 0)]);
        assert_eq!(
            k.compaction_victims(b"b", 6),
            [Rev::new(3, 0), Rev::new(5, 0)]
        );
        assert!(k.compaction_victims(b"c", 5).is_empty());
        k.apply(&[
            Change::Forget(b"b".to_vec(), Rev::new(3, 0)),
            Change::Forget(b"b".to_vec(), Rev::new(5, 0)),
        ]);
        assert_eq!(k.get(b"b", None), Some(Rev::new(7, 0)));
        assert_eq!(k.get(b"b", Some(6)), None);
    }

    #[test]
    fn the_key_of_an_encoded_row_is_read_without_decoding_it() {
        let kv = KeyValue {
            key: b"/registry/pods/x".to_vec(),
            create_revision: 300,
            mod_revision: 301,
            version: 2,
            value: vec![7u8; 1000].into(),
            lease: 99,
        };
        let encoded = kv.encode_to_vec();
        assert_eq!(key_of_row(&encoded), Some((&kv.key[..], false)));
        let tombstone = KeyValue {
            key: b"k".to_vec(),
            mod_revision: 5,
            ..Default::default()
        };
        assert_eq!(
            key_of_row(&tombstone.encode_to_vec()),
            Some((&b"k"[..], true))
        );
        assert_eq!(key_of_row(&[0x0a, 0x05, b'a']), None);
    }
}
