//! `Store::apply`: the one deterministic function that executes a committed command against the
//! revision table. Every replica applies the same commands in the same order and so holds the same
//! table; a command's writes, its revision and the raft index go into one atomic sled batch, so a
//! crash keeps all of a command or none of it and replaying the raft log is idempotent.

use std::collections::BTreeMap;

use prost::Message;

use super::index::{Change, Version};
use super::read::{Collector, KeyRange};
use super::schema::*;
use super::Store;
use crate::command::{Command, Op};
use crate::error::{Error, Result};
use crate::proto::etcdserverpb::{
    compare, request_op, response_op, AlarmRequest, AlarmResponse, CompactionRequest,
    CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};

/// etcd's upper bound for lease TTLs (seconds).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// The answer to one applied command.
#[derive(Debug, Clone)]
pub enum Response {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Alarm(AlarmResponse),
    /// Commands with nothing to answer but success (membership attributes, join tokens).
    Done,
}

/// What the lessor must learn from an applied command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEffect {
    Granted { id: i64, ttl: i64 },
    Revoked { id: i64 },
}

/// A successfully applied command: its answer, the store revision after it, and what it changed.
#[derive(Debug, Clone)]
pub struct Applied {
    pub revision: i64,
    pub response: Response,
    /// Events of this revision in sub-revision order (with prev_kv), for the watch hub.
    pub events: Vec<Event>,
    pub lease_effects: Vec<LeaseEffect>,
}

impl Store {
    /// Applies the command committed at raft `index`. The outer error is a storage failure (the
    /// node must stop); the inner result is the request's own answer, deterministic on every
    /// replica. A failed request changes nothing but still records `index` as applied.
    pub fn apply(&self, index: u64, cmd: &Command) -> Result<Result<Applied>> {
        let mut answers = self.apply_group(&[(index, cmd)])?;
        Ok(answers
            .pop()
            .unwrap_or_else(|| Err(Error::InvalidArgument("empty command group".into()))))
    }

    /// Whether a command may share a batch with its neighbours (see [`Store::apply_group`]):
    /// key-value writes whose reads only need the live table.
    pub fn groupable(cmd: &Command) -> bool {
        match &cmd.op {
            Some(Op::Put(_)) | Some(Op::DeleteRange(_)) => true,
            Some(Op::Txn(t)) => !reads_history(t),
            _ => false,
        }
    }

    /// Applies consecutive committed commands as one atomic sled batch: each sees the writes of
    /// those before it, exactly as if applied one by one, at a fraction of the cost. Commands
    /// other than [`Store::groupable`] ones must come alone.
    pub fn apply_group(&self, cmds: &[(u64, &Command)]) -> Result<Vec<Result<Applied>>> {
        let Some(&(last_index, _)) = cmds.last() else {
            return Ok(vec![]);
        };
        let mut group = Group {
            writes: Writes::default(),
            live: BTreeMap::new(),
            revision: self.revision(),
        };
        let start_revision = group.revision;
        let mut new_compact = None;
        let mut answers = Vec::with_capacity(cmds.len());
        for &(index, cmd) in cmds {
            if index != 0 && index <= self.applied_index() {
                answers.push(Err(Error::InvalidArgument(format!(
                    "raft index {index} already applied"
                ))));
                continue;
            }
            let mut txn = WriteTxn::new(self, &group);
            let answer = match &cmd.op {
                Some(Op::Put(r)) => txn.put(r).map(Response::Put),
                Some(Op::DeleteRange(r)) => txn.delete_range(r).map(Response::DeleteRange),
                Some(Op::Txn(r)) => txn.txn_top(r).map(Response::Txn),
                Some(Op::Compact(r)) => txn.compact(r).map(Response::Compact),
                Some(Op::LeaseGrant(r)) => txn.lease_grant(r).map(Response::LeaseGrant),
                Some(Op::LeaseRevoke(r)) => txn.lease_revoke(r).map(Response::LeaseRevoke),
                Some(Op::Alarm(r)) => txn.alarm(r).map(Response::Alarm),
                Some(Op::MemberAttributes(m)) => txn.publish_member(m).map(|()| Response::Done),
                Some(Op::FailureDomain(d)) => {
                    txn.publish_failure_domain(d).map(|()| Response::Done)
                }
                Some(Op::AddJoinToken(t)) => txn.add_join_token(t).map(|()| Response::Done),
                Some(Op::ConsumeJoinToken(t)) => txn.consume_join_token(t).map(|()| Response::Done),
                None => Err(Error::InvalidArgument("empty command".into())),
            };
            answers.push(match answer {
                Ok(response) => {
                    let changed = txn.sub > 0;
                    let WriteTxn {
                        batch,
                        live,
                        events,
                        lease_effects,
                        new_compact: compacted,
                        ..
                    } = txn;
                    group.writes.append(batch);
                    group.live.extend(live);
                    if changed {
                        group.revision += 1;
                    }
                    if compacted.is_some() {
                        new_compact = compacted;
                    }
                    Ok(Applied {
                        revision: group.revision,
                        response,
                        events,
                        lease_effects,
                    })
                }
                // A failed command wrote nothing (its writes are dropped with it).
                Err(e) => Err(e),
            });
        }
        let moved = (group.revision != start_revision).then_some(group.revision);
        self.commit_batch(group.writes, last_index, moved, new_compact)?;
        if cmds.iter().any(|(_, c)| matches!(c.op, Some(Op::Alarm(_)))) {
            self.refresh_alarm_state()?;
        }
        Ok(answers)
    }

    /// Writes commands' table entries together with the applied raft index and the store
    /// revision, as one atomic change, then publishes them to readers: the key index, the
    /// revision and the compaction revision change together, under the index's lock, once the
    /// rows they name are in the table.
    ///
    /// Commands that only add rows (most puts and deletes) skip sled's batch, whose fixed cost
    /// is most of a single put's: their rows and their owners entry go in one by one, then the
    /// [`META_OWNERS_STATE`] and [`META_STATE`] entries. sled recovers a prefix of the writes
    /// made, so a crash leaves either all of it, or rows above the recorded revision with
    /// nothing pointing at them, which the next start removes before applying the commands
    /// again from the raft log (`Store::reload`).
    pub(crate) fn commit_batch(
        &self,
        writes: Writes,
        index: u64,
        revision: Option<i64>,
        compact: Option<i64>,
    ) -> Result<()> {
        let state = encode_state(index, revision.unwrap_or_else(|| self.revision()));
        let rows_only = compact.is_none() && writes.only_new_rows();
        let (write, changes) = writes.into_parts(rows_only);
        let _locks = self.lock_commit(compact.is_some());
        let started = std::time::Instant::now();
        match write {
            Write::Rows(rows) => {
                for (key, row) in rows {
                    self.table.insert(key, row)?;
                }
                self.table.insert(META_OWNERS_STATE, &state)?;
                self.table.insert(META_STATE, &state)?;
            }
            Write::Batch(mut batch) => {
                batch.insert(META_OWNERS_STATE, &state);
                batch.insert(META_STATE, &state);
                self.table.apply_batch(batch)?;
            }
        }
        crate::metrics::metrics()
            .backend_commit
            .observe(started.elapsed().as_secs_f64());
        let mut keys = self.index.write();
        keys.apply(&changes);
        if let Some(rev) = revision {
            self.set_revision(rev);
        }
        if let Some(c) = compact {
            self.compact_revision
                .store(c, std::sync::atomic::Ordering::Release);
        }
        self.applied_index
            .store(index, std::sync::atomic::Ordering::Release);
        drop(keys);
        Ok(())
    }

    /// Alarms raised (member id, alarm type), from the table.
    pub fn alarms(&self) -> Result<Vec<(u64, i32)>> {
        let mut out = vec![];
        for item in self.table.scan_prefix(META_ALARM) {
            let (k, _) = item?;
            let rest = &k[META_ALARM.len()..];
            if rest.len() != 12 {
                return Err(Error::Corrupt("alarm key".into()));
            }
            let member = u64::from_be_bytes(rest[..8].try_into().unwrap_or([0; 8]));
            let alarm = i32::from_be_bytes(rest[8..].try_into().unwrap_or([0; 4]));
            out.push((member, alarm));
        }
        Ok(out)
    }
}

const META_ALARM: &[u8] = b"malarm/";

/// Which operations of a txn a pre-execution check pass looks at.
#[derive(Clone, Copy)]
enum Check {
    Puts,
    Ranges,
}

/// Writes of commands being applied, in order: table entries (one sled batch) and the key
/// index changes they make.
#[derive(Default)]
pub(crate) struct Writes {
    table: Vec<(sled::IVec, Option<sled::IVec>)>,
    index: Vec<Change>,
}

impl Writes {
    pub(crate) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.table
            .push((key.as_ref().into(), Some(value.as_ref().into())));
    }

    pub(crate) fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.table.push((key.as_ref().into(), None));
    }

    /// A change of the key index that the table writes make.
    pub(crate) fn index(&mut self, change: Change) {
        self.index.push(change);
    }

    fn append(&mut self, other: Writes) {
        self.table.extend(other.table);
        self.index.extend(other.index);
    }

    /// Whether every table write is a new history row (then they may go in one by one).
    fn only_new_rows(&self) -> bool {
        self.table
            .iter()
            .all(|(key, value)| value.is_some() && key.first() == Some(&ROW))
    }

    /// The owners entry of the rows written (see `schema.rs`), if any were.
    fn owners_entry(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut owners: Vec<Owner> = self
            .index
            .iter()
            .filter_map(|change| match change {
                Change::Add(key, version) => Some(Owner {
                    rev: version.rev,
                    key: key.clone(),
                    tombstone: version.tombstone,
                }),
                Change::Forget(..) => None,
            })
            .collect();
        owners.sort_by_key(|o| o.rev);
        let last = owners.last()?.rev;
        Some((owners_key(last), encode_owners(&owners)))
    }

    /// The table writes, with the owners entry of the rows written, as a sled batch, or (when
    /// `rows_only`) as the entries to insert in order; and the key index changes.
    fn into_parts(self, rows_only: bool) -> (Write, Vec<Change>) {
        let owners = self.owners_entry();
        let write = if rows_only {
            let mut rows: Vec<(sled::IVec, sled::IVec)> = self
                .table
                .into_iter()
                .filter_map(|(key, value)| Some((key, value?)))
                .collect();
            rows.extend(owners.map(|(k, v)| (k.into(), v.into())));
            Write::Rows(rows)
        } else {
            let mut batch = sled::Batch::default();
            if let Some((k, v)) = owners {
                batch.insert(k, v);
            }
            for (key, value) in self.table {
                match value {
                    Some(v) => batch.insert(key, v),
                    None => batch.remove(key),
                }
            }
            Write::Batch(batch)
        };
        (write, self.index)
    }
}

/// How a group's table writes go in (see [`Store::commit_batch`]).
enum Write {
    /// New history rows, inserted one by one in order.
    Rows(Vec<(sled::IVec, sled::IVec)>),
    /// Anything else: one atomic sled batch.
    Batch(sled::Batch),
}

/// Commands applied so far in one group: their writes and their live-table changes.
struct Group {
    writes: Writes,
    live: BTreeMap<Vec<u8>, Option<KeyValue>>,
    /// Store revision after the commands so far.
    revision: i64,
}

/// Whether a txn reads past revisions (those must see the table, so the txn is applied alone).
fn reads_history(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(request_op::Request::RequestRange(r)) => r.revision > 0,
            Some(request_op::Request::RequestTxn(nested)) => reads_history(nested),
            _ => false,
        })
}

/// One command's writes in progress: reads see the table, the group's earlier commands, then
/// the writes made so far.
pub(crate) struct WriteTxn<'s> {
    pub(crate) store: &'s Store,
    /// Live-table changes of the group's earlier commands.
    earlier: &'s BTreeMap<Vec<u8>, Option<KeyValue>>,
    /// Store revision before this command.
    base: i64,
    /// Next sub-revision; > 0 once anything was written.
    sub: i64,
    pub(crate) batch: Writes,
    /// Live-table changes of this command (None = deleted), overlaying the tree.
    live: BTreeMap<Vec<u8>, Option<KeyValue>>,
    events: Vec<Event>,
    lease_effects: Vec<LeaseEffect>,
    new_compact: Option<i64>,
}

impl<'s> WriteTxn<'s> {
    fn new(store: &'s Store, group: &'s Group) -> WriteTxn<'s> {
        WriteTxn {
            store,
            earlier: &group.live,
            base: group.revision,
            sub: 0,
            batch: Writes::default(),
            live: BTreeMap::new(),
            events: vec![],
            lease_effects: vec![],
            new_compact: None,
        }
    }

    /// The revision a read inside this command observes (etcd: begin revision, +1 once written).
    fn read_rev(&self) -> i64 {
        if self.sub > 0 {
            self.base + 1
        } else {
            self.base
        }
    }

    fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    fn next_rev(&mut self) -> Rev {
        let rev = Rev::new(self.base + 1, self.sub);
        self.sub += 1;
        rev
    }

    fn get_live(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        if let Some(kv) = self.live.get(key) {
            return Ok(kv.clone());
        }
        self.before_command(key)
    }

    /// Live key-values in range, including this command's writes, in key order.
    fn live_in(&self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        let mut merged: BTreeMap<Vec<u8>, KeyValue> = self
            .store
            .live_rows(range)?
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        for (key, kv) in self.earlier.iter().chain(&self.live) {
            if range.contains(key) {
                match kv {
                    Some(kv) => merged.insert(key.clone(), kv.clone()),
                    None => merged.remove(key),
                };
            }
        }
        Ok(merged.into_values().collect())
    }

    fn lease_exists(&self, id: i64) -> Result<bool> {
        Ok(self.store.table.contains_key(lease_key(id))?)
    }

    /// Writes a new row for `kv.key` (a tombstone when `kv.version == 0`), its version in the
    /// key index, and the lease attachment.
    fn write_row(&mut self, rev: Rev, kv: &KeyValue, prev: Option<&KeyValue>) {
        let tombstone = kv.version == 0;
        self.batch.insert(row_key(rev), kv.encode_to_vec());
        self.batch
            .index(Change::Add(kv.key.clone(), Version { rev, tombstone }));
        let old_lease = prev.map(|p| p.lease).unwrap_or(0);
        let new_lease = if tombstone { 0 } else { kv.lease };
        if old_lease != 0 && old_lease != new_lease {
            self.batch.remove(lease_attachment_key(old_lease, &kv.key));
        }
        if new_lease != 0 && new_lease != old_lease {
            self.batch
                .insert(lease_attachment_key(new_lease, &kv.key), []);
        }
        if tombstone {
            self.live.insert(kv.key.clone(), None);
        } else {
            self.live.insert(kv.key.clone(), Some(kv.clone()));
        }
    }

    fn put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        if !req.ignore_lease && req.lease != 0 && !self.lease_exists(req.lease)? {
            return Err(Error::LeaseNotFound);
        }
        // The value before this command (for the watch event) and the value this put replaces
        // (different only when this command wrote the key already): one table read for both.
        let before = self.before_command(&req.key)?;
        let prev = match self.live.get(&req.key) {
            Some(written) => written.clone(),
            None => before.clone(),
        };
        let (value, lease) = match (&prev, req.ignore_value || req.ignore_lease) {
            (None, true) => return Err(Error::KeyNotFound),
            (Some(p), true) => (
                if req.ignore_value {
                    p.value.clone()
                } else {
                    req.value.clone()
                },
                if req.ignore_lease { p.lease } else { req.lease },
            ),
            (_, false) => (req.value.clone(), req.lease),
        };
        let rev = self.next_rev();
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(rev.main, |p| p.create_revision),
            mod_revision: rev.main,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.write_row(rev, &kv, prev.as_ref());
        let event_prev = if kv.create_revision == kv.mod_revision {
            None
        } else {
            before
        };
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: event_prev,
        });
        Ok(PutResponse {
            header: Self::header(rev.main),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let victims = self.live_in(&range)?;
        for prev in &victims {
            self.delete_key(prev)?;
        }
        Ok(DeleteRangeResponse {
            header: Self::header(self.read_rev()),
            deleted: victims.len() as i64,
            prev_kvs: if req.prev_kv { victims } else { vec![] },
        })
    }

    fn delete_key(&mut self, prev: &KeyValue) -> Result<()> {
        let rev = self.next_rev();
        let tombstone = KeyValue {
            key: prev.key.clone(),
            mod_revision: rev.main,
            ..Default::default()
        };
        self.write_row(rev, &tombstone, Some(prev));
        let event_prev = self.before_command(&prev.key)?;
        self.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(tombstone),
            prev_kv: event_prev,
        });
        Ok(())
    }

    /// The key's value before this command (what etcd puts in watch events' prev_kv).
    fn before_command(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        if let Some(kv) = self.earlier.get(key) {
            return Ok(kv.clone());
        }
        self.store.latest_row(key)
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let now = self.read_rev();
        let mut collector = Collector::new(req);
        if req.revision > 0 && req.revision < now {
            // Only a txn applied alone reads the past (see `reads_history`): the table holds
            // every revision below `now`.
            self.store.check_readable(req.revision, now)?;
            self.store
                .collect(&range, Some(req.revision), &mut collector)?;
        } else if req.revision > now {
            return Err(Error::FutureRevision);
        } else if self.live.is_empty() && self.earlier.is_empty() {
            self.store.collect(&range, None, &mut collector)?;
        } else {
            for kv in self.live_in(&range)? {
                if collector.needs_row() {
                    collector.push(kv);
                } else {
                    collector.count_only_key();
                }
            }
        }
        Ok(collector.finish(now))
    }

    /// A top-level Txn: etcd decides every (nested) branch against the state before the txn,
    /// checks the chosen operations, then executes them in order.
    fn txn_top(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        let mut path = vec![];
        self.choose_path(req, &mut path)?;
        self.check_chosen(req, &path, &mut 0)?;
        let mut cursor = 0;
        let mut resp = self.txn(req, &path, &mut cursor)?;
        resp.header = Self::header(self.read_rev());
        Ok(resp)
    }

    fn choose_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut succeeded = true;
        for c in &req.compare {
            if !self.compare(c)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        for op in ops {
            if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
                self.choose_path(nested, path)?;
            }
        }
        Ok(())
    }

    /// etcd's pre-execution checks of the chosen operations (nothing is written when one fails).
    fn check_chosen(&self, req: &TxnRequest, path: &[bool], cursor: &mut usize) -> Result<()> {
        // etcd checks every put of the chosen branches first, then every range.
        self.check_chosen_ops(req, path, &mut cursor.clone(), Check::Puts)?;
        self.check_chosen_ops(req, path, cursor, Check::Ranges)
    }

    fn check_chosen_ops(
        &self,
        req: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
        check: Check,
    ) -> Result<()> {
        let succeeded = path.get(*cursor).copied().unwrap_or(false);
        *cursor += 1;
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        for op in ops {
            match (&op.request, check) {
                (Some(request_op::Request::RequestPut(p)), Check::Puts) => {
                    if (p.ignore_value || p.ignore_lease) && self.get_live(&p.key)?.is_none() {
                        return Err(Error::KeyNotFound);
                    }
                    if p.lease != 0 && !self.lease_exists(p.lease)? {
                        return Err(Error::LeaseNotFound);
                    }
                }
                (Some(request_op::Request::RequestRange(r)), Check::Ranges) if r.revision > 0 => {
                    self.store.check_readable(r.revision, self.base)?;
                }
                (Some(request_op::Request::RequestTxn(nested)), _) => {
                    self.check_chosen_ops(nested, path, cursor, check)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn txn(&mut self, req: &TxnRequest, path: &[bool], cursor: &mut usize) -> Result<TxnResponse> {
        let succeeded = path.get(*cursor).copied().unwrap_or(false);
        *cursor += 1;
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(self.op(op, path, cursor)?);
        }
        // etcd leaves a nested txn's header empty; the top level fills its own.
        Ok(TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded,
            responses,
        })
    }

    fn op(&mut self, op: &RequestOp, path: &[bool], cursor: &mut usize) -> Result<ResponseOp> {
        use response_op::Response as R;
        let response = match &op.request {
            Some(request_op::Request::RequestRange(r)) => R::ResponseRange(self.range(r)?),
            Some(request_op::Request::RequestPut(r)) => R::ResponsePut(self.put(r)?),
            Some(request_op::Request::RequestDeleteRange(r)) => {
                R::ResponseDeleteRange(self.delete_range(r)?)
            }
            Some(request_op::Request::RequestTxn(r)) => R::ResponseTxn(self.txn(r, path, cursor)?),
            None => return Err(Error::InvalidArgument("empty request op".into())),
        };
        Ok(ResponseOp {
            response: Some(response),
        })
    }

    /// etcd's applyCompare: every key in range must satisfy the comparison; no key compares as
    /// a zero key-value, except that a value comparison on a missing key is always false.
    fn compare(&self, c: &Compare) -> Result<bool> {
        let range = KeyRange::new(&c.key, &c.range_end);
        let kvs = match &range {
            KeyRange::Single(k) => self.get_live(k)?.into_iter().collect(),
            _ => self.live_in(&range)?,
        };
        if kvs.is_empty() {
            if c.target == compare::CompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse> {
        let previous = self.store.compact_revision();
        if req.revision <= previous {
            return Err(Error::Compacted);
        }
        if req.revision > self.base {
            return Err(Error::FutureRevision);
        }
        self.store
            .prune_history(previous, req.revision, &mut self.batch)?;
        self.batch.insert(META_COMPACT, encode_i64(req.revision));
        self.new_compact = Some(req.revision);
        Ok(CompactionResponse {
            header: Self::header(self.base),
        })
    }

    fn lease_grant(&mut self, req: &LeaseGrantRequest) -> Result<LeaseGrantResponse> {
        if req.id == 0 {
            return Err(Error::InvalidArgument(
                "lease id must be chosen by the proposer".into(),
            ));
        }
        if req.ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge);
        }
        if self.lease_exists(req.id)? {
            return Err(Error::LeaseExists);
        }
        self.batch.insert(lease_key(req.id), encode_i64(req.ttl));
        self.lease_effects.push(LeaseEffect::Granted {
            id: req.id,
            ttl: req.ttl,
        });
        Ok(LeaseGrantResponse {
            header: Self::header(self.base),
            id: req.id,
            ttl: req.ttl,
            error: String::new(),
        })
    }

    fn lease_revoke(&mut self, req: &LeaseRevokeRequest) -> Result<LeaseRevokeResponse> {
        if !self.lease_exists(req.id)? {
            return Err(Error::LeaseNotFound);
        }
        for key in self.store.lease_keys(req.id)? {
            if let Some(prev) = self.get_live(&key)? {
                self.delete_key(&prev)?;
            }
            self.batch.remove(lease_attachment_key(req.id, &key));
        }
        self.batch.remove(lease_key(req.id));
        self.lease_effects.push(LeaseEffect::Revoked { id: req.id });
        Ok(LeaseRevokeResponse {
            header: Self::header(self.read_rev()),
        })
    }

    fn alarm(&mut self, req: &AlarmRequest) -> Result<AlarmResponse> {
        use crate::proto::etcdserverpb::alarm_request::AlarmAction;
        let mut key = META_ALARM.to_vec();
        key.extend_from_slice(&req.member_id.to_be_bytes());
        key.extend_from_slice(&req.alarm.to_be_bytes());
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Activate) => self.batch.insert(key, []),
            Ok(AlarmAction::Deactivate) => self.batch.remove(key),
            _ => {}
        }
        Ok(AlarmResponse {
            header: Self::header(self.base),
            alarms: vec![],
        })
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let ordering = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_ref().cmp(want)
        }
        Ok(target) => {
            let (have, want) = match (target, &c.target_union) {
                (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => {
                    (kv.create_revision, *v)
                }
                (CompareTarget::Create, _) => (kv.create_revision, 0),
                (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => (kv.mod_revision, *v),
                (CompareTarget::Mod, _) => (kv.mod_revision, 0),
                (CompareTarget::Version, Some(TargetUnion::Version(v))) => (kv.version, *v),
                (CompareTarget::Version, _) => (kv.version, 0),
                (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => (kv.lease, *v),
                (CompareTarget::Lease, _) => (kv.lease, 0),
                (CompareTarget::Value, _) => (0, 0),
            };
            have.cmp(&want)
        }
        Err(_) => return true,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ordering.is_eq(),
        Ok(CompareResult::NotEqual) => ordering.is_ne(),
        Ok(CompareResult::Greater) => ordering.is_gt(),
        Ok(CompareResult::Less) => ordering.is_lt(),
        Err(_) => true,
    }
}
