//! Members of the cluster and join tokens, kept in the revision table's meta space so that they
//! replicate, snapshot and restore with everything else.
//!
//! Conf changes (add learner, promote, demote, remove) are raft entries of their own kind; the
//! raft thread hands each to [`Store::apply_member_change`], which records it with the applied
//! index in one batch, exactly like a command.

use prost::Message;

use super::apply::WriteTxn;
use super::schema::{decode_i64, encode_i64};
use super::Store;
use crate::error::{Error, Result};
use crate::proto::etcdserverpb::Member;
use crate::proto::raftkinepb::{member_change::Kind, FailureDomain, JoinToken, MemberChange};

const MEMBER_PREFIX: &[u8] = b"mmember/";
const TOKEN_PREFIX: &[u8] = b"mtoken/";
const DOMAIN_PREFIX: &[u8] = b"mdomain/";

fn member_key(id: u64) -> Vec<u8> {
    let mut k = MEMBER_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn domain_key(id: u64) -> Vec<u8> {
    let mut k = DOMAIN_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn token_key(hash: &[u8]) -> Vec<u8> {
    let mut k = TOKEN_PREFIX.to_vec();
    k.extend_from_slice(hash);
    k
}

impl Store {
    /// All members, by id.
    pub fn members(&self) -> Result<Vec<Member>> {
        let mut out = vec![];
        for item in self.table.scan_prefix(MEMBER_PREFIX) {
            let (_, v) = item?;
            out.push(Member::decode(v.as_ref())?);
        }
        Ok(out)
    }

    pub fn member(&self, id: u64) -> Result<Option<Member>> {
        match self.table.get(member_key(id))? {
            Some(v) => Ok(Some(Member::decode(v.as_ref())?)),
            None => Ok(None),
        }
    }

    /// Quorum recovery only (`raftkine recover`, dqlite's `.reconfigure`), on a stopped member:
    /// the member records become exactly `members`. Like installing a snapshot, this is the
    /// one other writer of the table; every survivor gets the same records, so the replicas
    /// stay identical.
    pub fn recover_members(&self, members: &[Member]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for old in self.members()? {
            batch.remove(member_key(old.id));
        }
        for m in members {
            batch.insert(member_key(m.id), m.encode_to_vec());
        }
        self.table.apply_batch(batch)?;
        self.flush()
    }

    /// The first member of a new cluster, written before raft starts: the table's initial
    /// state (as etcd writes its initial cluster from `--initial-cluster`). Joining members get
    /// it with their first snapshot, like everything else.
    pub fn bootstrap_member(&self, member: &Member) -> Result<()> {
        if !self.members()?.is_empty() {
            return Ok(());
        }
        self.table
            .insert(member_key(member.id), member.encode_to_vec())?;
        self.flush()
    }

    /// A member's failure domain (0 when it published none).
    pub fn failure_domain(&self, id: u64) -> Result<u64> {
        Ok(self
            .table
            .get(domain_key(id))?
            .and_then(|v| decode_i64(&v))
            .map_or(0, |d| d as u64))
    }

    /// Records a committed conf change at raft `index`.
    pub fn apply_member_change(&self, index: u64, change: &MemberChange) -> Result<()> {
        let mut batch = super::apply::Writes::default();
        let member = change.member.clone().unwrap_or_default();
        let existing = self.member(member.id)?;
        match Kind::try_from(change.kind) {
            Ok(Kind::AddLearner) => {
                let mut m = member;
                m.is_learner = true;
                batch.insert(member_key(m.id), m.encode_to_vec());
            }
            Ok(kind @ (Kind::Promote | Kind::Demote)) => {
                let mut m = existing.unwrap_or(member);
                m.is_learner = kind == Kind::Demote;
                batch.insert(member_key(m.id), m.encode_to_vec());
            }
            Ok(Kind::Remove) => {
                batch.remove(member_key(member.id));
                batch.remove(domain_key(member.id));
            }
            Err(_) => return Err(Error::Corrupt("unknown member change".into())),
        }
        self.commit_batch(batch, index, None, None)
    }
}

impl WriteTxn<'_> {
    /// A member's name and URLs; its voter/learner role is kept. Only members publish: a
    /// record is created this way only for the first member of a new cluster (the table has no
    /// members yet); a removed member that is still running cannot come back.
    pub(crate) fn publish_member(&mut self, m: &Member) -> Result<()> {
        let mut record = m.clone();
        match self.store.member(m.id)? {
            Some(existing) => record.is_learner = existing.is_learner,
            None if self.store.members()?.is_empty() => record.is_learner = false,
            None => return Ok(()),
        }
        self.batch.insert(member_key(m.id), record.encode_to_vec());
        Ok(())
    }

    /// A member's failure domain (k8s-dqlite's `failure-domain` file); only members publish.
    pub(crate) fn publish_failure_domain(&mut self, d: &FailureDomain) -> Result<()> {
        if self.store.member(d.member_id)?.is_some() {
            self.batch
                .insert(domain_key(d.member_id), encode_i64(d.domain as i64));
        }
        Ok(())
    }

    pub(crate) fn add_join_token(&mut self, t: &JoinToken) -> Result<()> {
        self.batch
            .insert(token_key(&t.token_hash), encode_i64(t.expires_unix));
        Ok(())
    }

    /// Uses a token up: `t.expires_unix` is the proposer's "now".
    pub(crate) fn consume_join_token(&mut self, t: &JoinToken) -> Result<()> {
        let key = token_key(&t.token_hash);
        let expires = self
            .store
            .table
            .get(&key)?
            .and_then(|v| decode_i64(&v))
            .ok_or_else(|| {
                Error::InvalidArgument("join token is unknown or already used".into())
            })?;
        self.batch.remove(key);
        if expires < t.expires_unix {
            return Err(Error::InvalidArgument("join token has expired".into()));
        }
        Ok(())
    }
}
