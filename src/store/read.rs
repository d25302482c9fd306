//! Reading the revision table: key ranges at any revision, and shaping a RangeResponse the way etcd
//! does (count of the whole range, limit and `more`, sorting, revision filters, keys/count only).

use std::cmp::Ordering as CmpOrdering;

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

    /// Whether the next key's row must be read, `collected` rows being taken already (else
    /// the key is only counted).
    pub(crate) fn wants_row(&self, collected: usize) -> bool {
        !self.req.count_only && (self.needs_all || collected <= self.limit)
    }

    /// Whether the next key's row must be decoded (else it is only counted).
    pub(crate) fn needs_row(&self) -> bool {
        self.wants_row(self.kvs.len())
    }

    pub(crate) fn count_only_key(&mut self) {
        self.count += 1;
    }

    /// Counts keys whose rows were not taken.
    pub(crate) fn count_more(&mut self, keys: i64) {
        self.count += keys;
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
        let at = (req.revision > 0).then_some(req.revision);
        let mut collector = Collector::new(req);
        let current = self.collect(&range, at, &mut collector)?;
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

    /// Feeds the rows of `range` visible at revision `at` (None: the latest) to the collector,
    /// in key order; returns the store revision the read saw. The revisions come from one look
    /// at the key index (so a read never sees half a transaction), the rows after it.
    pub(crate) fn collect(
        &self,
        range: &KeyRange,
        at: Option<i64>,
        c: &mut Collector,
    ) -> Result<i64> {
        let (current, revs, uncollected) = {
            let keys = self.index.read();
            let current = self.revision();
            if let Some(rev) = at {
                self.check_readable(rev, current)?;
            }
            let at = at.filter(|rev| *rev < current);
            let mut revs = vec![];
            let mut uncollected = 0i64;
            keys.scan(range, at, |_, rev| {
                if c.wants_row(revs.len()) {
                    revs.push(rev);
                } else {
                    uncollected += 1;
                }
                true
            });
            (current, revs, uncollected)
        };
        for rev in revs {
            c.push(self.row_for_read(rev, at)?);
        }
        c.count_more(uncollected);
        Ok(current)
    }

    /// A row the key index named for a read at `at`: gone only if a compaction applied since
    /// removed it, which makes the read's revision compacted.
    fn row_for_read(&self, rev: Rev, at: Option<i64>) -> Result<KeyValue> {
        match self.table.get(row_key(rev))? {
            Some(row) => Store::decode_row_shared(row),
            None if at.is_some_and(|at| at < self.compact_revision()) => Err(Error::Compacted),
            None => Err(Error::Corrupt(format!("missing row {rev:?}"))),
        }
    }

    /// The live (latest, not deleted) key-values of `range`, in key order.
    pub(crate) fn live_rows(&self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        let mut revs = vec![];
        self.index.read().scan(range, None, |_, rev| {
            revs.push(rev);
            true
        });
        revs.into_iter().map(|rev| self.row(rev)).collect()
    }

    /// The key's latest value, unless it does not exist.
    pub(crate) fn latest_row(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let found = self.index.read().get(key, None);
        found.map(|rev| self.row(rev)).transpose()
    }

    /// The row stored at a revision.
    pub(crate) fn row(&self, rev: Rev) -> Result<KeyValue> {
        match self.table.get(row_key(rev))? {
            Some(bytes) => Store::decode_row(&bytes),
            None => Err(Error::Corrupt(format!("missing row {rev:?}"))),
        }
    }

    /// The key's value before the transaction of `rev` (a watch event's prev_kv), if it existed.
    pub(crate) fn row_before(&self, key: &[u8], rev: Rev) -> Result<Option<KeyValue>> {
        let found = self.index.read().before(key, rev.main);
        found.map(|rev| self.row(rev)).transpose()
    }
}
