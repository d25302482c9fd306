//! Reading the revision table: key ranges at any revision, and shaping a RangeResponse the way etcd
//! does (count of the whole range, limit and `more`, sorting, revision filters, keys/count only).

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::{fence, Ordering};

use super::schema::*;
use super::Store;
use crate::error::{Error, Result};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use crate::proto::mvccpb::KeyValue;

/// The keys a request names, with etcd's `range_end` rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// Exactly one key (empty `range_end`).
    Single(Vec<u8>),
    /// `[start, end)`; `end == None` means no upper bound (`range_end == "\0"`).
    Span {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    pub fn new(key: &[u8], range_end: &[u8]) -> KeyRange {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::Span {
                start: key.to_vec(),
                end: None,
            },
            end => KeyRange::Span {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k.as_slice() == key,
            KeyRange::Span { start, end } => {
                key >= start.as_slice() && end.as_ref().is_none_or(|e| key < e.as_slice())
            }
        }
    }

    /// Whether two ranges share a key (used for etcd's duplicate-key check in txns).
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        let (a0, a1) = self.bounds();
        let (b0, b1) = other.bounds();
        let a_before_b_end = b1.as_ref().is_none_or(|e| a0.as_slice() < e.as_slice());
        let b_before_a_end = a1.as_ref().is_none_or(|e| b0.as_slice() < e.as_slice());
        a_before_b_end && b_before_a_end
    }

    /// Half-open bounds `[start, end)`; a single key k is `[k, k\0)`.
    fn bounds(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            KeyRange::Single(k) => {
                let mut end = k.clone();
                end.push(0);
                (k.clone(), Some(end))
            }
            KeyRange::Span { start, end } => (start.clone(), end.clone()),
        }
    }
}

/// Accumulates the keys of a range in key order and turns them into etcd's answer.
pub(crate) struct Collector<'r> {
    req: &'r RangeRequest,
    /// Sorting or filtering needs every row; otherwise only the first `limit` rows are decoded.
    needs_all: bool,
    limit: usize,
    kvs: Vec<KeyValue>,
    count: i64,
}

impl<'r> Collector<'r> {
    pub(crate) fn new(req: &'r RangeRequest) -> Collector<'r> {
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // As etcd: only an explicit sort order reads the whole range; NONE with another target
        // sorts (ascending) just the first limit+1 keys.
        let sorted = req.sort_order != SortOrder::None as i32;
        let limit = if req.limit > 0 {
            req.limit as usize
        } else {
            usize::MAX
        };
        Collector {
            req,
            needs_all: filtered || sorted,
            limit,
            kvs: vec![],
            count: 0,
        }
    }

    /// Whether the next key's row must be decoded (else it is only counted).
    pub(crate) fn needs_row(&self) -> bool {
        !self.req.count_only && (self.needs_all || self.kvs.len() <= self.limit)
    }

    pub(crate) fn count_only_key(&mut self) {
        self.count += 1;
    }

    pub(crate) fn push(&mut self, kv: KeyValue) {
        self.count += 1;
        if self.passes_filters(&kv) {
            self.kvs.push(kv);
        }
    }

    fn passes_filters(&self, kv: &KeyValue) -> bool {
        let r = self.req;
        !((r.min_mod_revision > 0 && kv.mod_revision < r.min_mod_revision)
            || (r.max_mod_revision > 0 && kv.mod_revision > r.max_mod_revision)
            || (r.min_create_revision > 0 && kv.create_revision < r.min_create_revision)
            || (r.max_create_revision > 0 && kv.create_revision > r.max_create_revision))
    }

    /// The response (header revision filled in by the caller).
    pub(crate) fn finish(mut self, header_revision: i64) -> RangeResponse {
        let req = self.req;
        if req.count_only {
            self.kvs.clear();
        }
        sort_kvs(&mut self.kvs, req);
        let mut more = false;
        if req.limit > 0 && self.kvs.len() > req.limit as usize {
            self.kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            for kv in &mut self.kvs {
                kv.value.clear();
            }
        }
        RangeResponse {
            header: Some(ResponseHeader {
                revision: header_revision,
                ..Default::default()
            }),
            kvs: self.kvs,
            more,
            count: self.count,
        }
    }
}

fn sort_kvs(kvs: &mut [KeyValue], req: &RangeRequest) {
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    let by = |a: &KeyValue, b: &KeyValue| -> CmpOrdering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(by),
        SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
    }
}

impl Store {
    /// KV.Range outside a transaction: at `req.revision` (or current), with etcd's errors.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let current = self.revision();
        if req.revision <= 0 || req.revision == current {
            if let Some(resp) = self.try_range_live(req, &range)? {
                return Ok(resp);
            }
        }
        let rev = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        self.check_readable(rev, current)?;
        let mut collector = Collector::new(req);
        self.collect_at(&range, rev, &mut collector)?;
        // A compaction applied while we read may have removed rows we needed.
        self.check_readable(rev, current)?;
        Ok(collector.finish(current))
    }

    /// Errors for revisions that cannot be read.
    pub fn check_readable(&self, rev: i64, current: i64) -> Result<()> {
        if rev > current {
            return Err(Error::FutureRevision);
        }
        if rev < self.compact_revision() {
            return Err(Error::Compacted);
        }
        Ok(())
    }

    /// A current read from the live table, if no write interleaved with it (see `write_seq`).
    fn try_range_live(
        &self,
        req: &RangeRequest,
        range: &KeyRange,
    ) -> Result<Option<RangeResponse>> {
        for _attempt in 0..2 {
            let before = self.write_seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::thread::yield_now();
                continue;
            }
            let rev = self.revision();
            let mut collector = Collector::new(req);
            self.collect_live(range, &mut collector)?;
            fence(Ordering::Acquire);
            if self.write_seq.load(Ordering::Acquire) == before {
                return Ok(Some(collector.finish(rev)));
            }
        }
        Ok(None)
    }

    /// Feeds the live (latest, not deleted) rows of `range` to the collector, in key order.
    pub(crate) fn collect_live(&self, range: &KeyRange, c: &mut Collector) -> Result<()> {
        self.visit_live(range, |_key, row| {
            if c.needs_row() {
                c.push(Store::decode_row(row)?);
            } else {
                c.count_only_key();
            }
            Ok(())
        })
    }

    /// Calls `f(key, encoded row)` for each live key in range, in key order.
    pub(crate) fn visit_live(
        &self,
        range: &KeyRange,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        match range {
            KeyRange::Single(k) => {
                if let Some(row) = self.table.get(live_key(k))? {
                    f(k, &row)?;
                }
            }
            KeyRange::Span { start, end } => {
                let lower = live_key(start);
                let upper = match end {
                    Some(e) => live_key(e),
                    None => vec![LIVE + 1],
                };
                if lower >= upper {
                    return Ok(());
                }
                for item in self.table.range(lower..upper) {
                    let (k, row) = item?;
                    f(&k[1..], &row)?;
                }
            }
        }
        Ok(())
    }

    /// Feeds the rows of `range` as of revision `rev` to the collector, in key order.
    pub(crate) fn collect_at(&self, range: &KeyRange, rev: i64, c: &mut Collector) -> Result<()> {
        self.visit_at(range, rev, |found| {
            if c.needs_row() {
                c.push(self.row(found)?);
            } else {
                c.count_only_key();
            }
            Ok(())
        })
    }

    /// The row stored at a revision.
    pub(crate) fn row(&self, rev: Rev) -> Result<KeyValue> {
        match self.table.get(row_key(rev))? {
            Some(bytes) => Store::decode_row(&bytes),
            None => Err(Error::Corrupt(format!("missing row {rev:?}"))),
        }
    }

    /// Calls `f(revision of the key's row)` for each key alive at `rev` in range, in key order.
    pub(crate) fn visit_at(
        &self,
        range: &KeyRange,
        rev: i64,
        mut f: impl FnMut(Rev) -> Result<()>,
    ) -> Result<()> {
        match range {
            KeyRange::Single(k) => {
                if let Some(found) = self.latest_at(k, rev)? {
                    f(found)?;
                }
            }
            KeyRange::Span { start, end } => {
                let mut cursor = index_prefix(start);
                let upper = match end {
                    Some(e) => index_prefix(e),
                    None => vec![INDEX + 1],
                };
                while cursor < upper {
                    let Some(item) = self.table.range(cursor.clone()..upper.clone()).next() else {
                        break;
                    };
                    let (ik, _) = item?;
                    let (key, _) =
                        decode_index_key(&ik).ok_or_else(|| Error::Corrupt("index key".into()))?;
                    if let Some(found) = self.latest_at(&key, rev)? {
                        f(found)?;
                    }
                    cursor = index_prefix(&key);
                    cursor.extend_from_slice(&[0xFF; 16]);
                    cursor.push(0);
                }
            }
        }
        Ok(())
    }

    /// Revision of the newest row of `key` at or below `rev`, unless that row is a tombstone.
    pub(crate) fn latest_at(&self, key: &[u8], rev: i64) -> Result<Option<Rev>> {
        let lower = index_prefix(key);
        let upper = index_key(key, Rev::new(rev, i64::MAX));
        match self.table.range(lower..=upper).next_back() {
            Some(item) => {
                let (ik, tombstone) = item?;
                if tombstone.first() == Some(&1) {
                    return Ok(None);
                }
                let (_, found) =
                    decode_index_key(&ik).ok_or_else(|| Error::Corrupt("index key".into()))?;
                Ok(Some(found))
            }
            None => Ok(None),
        }
    }

    /// The key's value before the transaction of `rev` (a watch event's prev_kv), if it existed.
    pub(crate) fn row_before(&self, key: &[u8], rev: Rev) -> Result<Option<KeyValue>> {
        let lower = index_prefix(key);
        let upper = index_key(key, Rev::new(rev.main, 0));
        match self.table.range(lower..upper).next_back() {
            Some(item) => {
                let (ik, tombstone) = item?;
                if tombstone.first() == Some(&1) {
                    return Ok(None);
                }
                let (_, found) =
                    decode_index_key(&ik).ok_or_else(|| Error::Corrupt("index key".into()))?;
                Ok(Some(self.row(found)?))
            }
            None => Ok(None),
        }
    }
}
