//! etcd 3.4's backend layout on a bbolt database: the buckets etcd and `etcdctl snapshot
//! restore` expect, and how a [`History`] is encoded in them.
//!
//! | bucket            | key                                        | value                           |
//! |-------------------|--------------------------------------------|---------------------------------|
//! | `key`             | main(8) `_` sub(8), then `t` if tombstone  | mvccpb.KeyValue (tombstone: key only) |
//! | `meta`            | `consistent_index`                         | u64                             |
//! |                   | `scheduledCompactRev`, `finishedCompactRev`| main(8) `_` sub(8)              |
//! | `lease`           | id(8)                                      | leasepb.Lease{ID, TTL}          |
//! | `members`         | member id in hex                           | JSON (id, peerURLs, name, ...)  |
//! | `members_removed` | member id in hex                           | `removed`                       |
//! | `cluster`         | `clusterVersion`                           | `3.4.0`                         |
//! | `alarm`           | etcdserverpb.AlarmMember                   | empty                           |
//! | `auth`            | `authRevision` (`authEnabled` when on)      | u64 (one byte)                  |
//! | `authUsers`, `authRoles` | name                                | authpb.User / authpb.Role       |
//!
//! Integers are big-endian. etcd derives its current revision from the last row of `key` (or the
//! compaction revision when that is higher); so does [`decode`].

use prost::Message;

use super::bbolt::{self, Bucket};
use crate::error::{Error, Result};
use crate::proto::etcdserverpb::AlarmMember;
use crate::proto::mvccpb::KeyValue;
use crate::store::backup::History;
use crate::store::schema::Rev;

/// The cluster version written into snapshots: the backend layout is etcd 3.4's (no `term` or
/// `confState` in `meta`), which etcd 3.4 and later restore.
pub const CLUSTER_VERSION: &str = "3.4.0";

const KEY: &[u8] = b"key";
const META: &[u8] = b"meta";
const LEASE: &[u8] = b"lease";
const MEMBERS: &[u8] = b"members";
const MEMBERS_REMOVED: &[u8] = b"members_removed";
const CLUSTER: &[u8] = b"cluster";
const ALARM: &[u8] = b"alarm";
const AUTH: &[u8] = b"auth";
const AUTH_USERS: &[u8] = b"authUsers";
const AUTH_ROLES: &[u8] = b"authRoles";

const CONSISTENT_INDEX: &[u8] = b"consistent_index";
const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
const CLUSTER_VERSION_KEY: &[u8] = b"clusterVersion";
const AUTH_REVISION: &[u8] = b"authRevision";
const AUTH_ENABLED: &[u8] = b"authEnabled";

/// etcd's leasepb.Lease.
#[derive(Clone, PartialEq, prost::Message)]
struct Lease {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

fn bad(why: impl std::fmt::Display) -> Error {
    Error::BadSnapshot(why.to_string())
}

/// etcd's revision key: main, `_`, sub, and `t` for a tombstone.
fn revision_key(rev: Rev, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&(rev.main as u64).to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&(rev.sub as u64).to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

fn parse_revision_key(k: &[u8]) -> Result<(Rev, bool)> {
    let tombstone = match k.len() {
        17 => false,
        18 if k[17] == b't' => true,
        _ => return Err(bad(format!("revision key of {} bytes", k.len()))),
    };
    if k[8] != b'_' {
        return Err(bad("revision key without `_`"));
    }
    let main = k[..8].try_into().map(u64::from_be_bytes);
    let sub = k[9..17].try_into().map(u64::from_be_bytes);
    match (main, sub) {
        (Ok(main), Ok(sub)) => Ok((Rev::new(main as i64, sub as i64), tombstone)),
        _ => Err(bad("revision key")),
    }
}

fn u64_value(v: &[u8], what: &str) -> Result<u64> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| bad(format!("{what}: {} bytes, expected 8", v.len())))
}

/// The member record etcd keeps in `members`.
fn member_json(m: &crate::proto::etcdserverpb::Member) -> Vec<u8> {
    let mut doc = serde_json::Map::new();
    doc.insert("id".into(), m.id.into());
    doc.insert("peerURLs".into(), m.peer_ur_ls.clone().into());
    if m.is_learner {
        doc.insert("isLearner".into(), true.into());
    }
    if !m.name.is_empty() {
        doc.insert("name".into(), m.name.clone().into());
    }
    if !m.client_ur_ls.is_empty() {
        doc.insert("clientURLs".into(), m.client_ur_ls.clone().into());
    }
    serde_json::Value::Object(doc).to_string().into_bytes()
}

/// The bbolt database of a history, laid out as etcd 3.4 lays out its backend.
pub fn encode(h: &History) -> Result<Vec<u8>> {
    let mut keys = Bucket::new();
    for (rev, kv) in &h.rows {
        let tombstone = kv.version == 0;
        let value = if tombstone {
            KeyValue {
                key: kv.key.clone(),
                ..Default::default()
            }
            .encode_to_vec()
        } else {
            kv.encode_to_vec()
        };
        keys.put(revision_key(*rev, tombstone), value);
    }

    let mut meta = Bucket::new();
    meta.put(CONSISTENT_INDEX, h.applied_index.to_be_bytes());
    if h.compact_revision >= 0 {
        let at = revision_key(Rev::new(h.compact_revision, 0), false);
        meta.put(FINISHED_COMPACT, at.clone());
        meta.put(SCHEDULED_COMPACT, at);
    }

    let mut leases = Bucket::new();
    let mut by_id = h.leases.clone();
    by_id.sort_by_key(|(id, _)| *id as u64);
    for (id, ttl) in by_id {
        let lease = Lease {
            id,
            ttl,
            remaining_ttl: 0,
        };
        leases.put((id as u64).to_be_bytes(), lease.encode_to_vec());
    }

    let mut members = Bucket::new();
    let mut sorted = h.members.clone();
    sorted.sort_by_key(|m| format!("{:x}", m.id));
    for m in &sorted {
        members.put(format!("{:x}", m.id), member_json(m));
    }

    let mut alarms = Bucket::new();
    let mut encoded: Vec<Vec<u8>> = h
        .alarms
        .iter()
        .map(|&(member_id, alarm)| AlarmMember { member_id, alarm }.encode_to_vec())
        .collect();
    encoded.sort();
    for k in encoded {
        alarms.put(k, Vec::new());
    }

    let mut cluster = Bucket::new();
    cluster.put(CLUSTER_VERSION_KEY, CLUSTER_VERSION);
    let mut auth = Bucket::new();
    auth.put(AUTH_REVISION, 1u64.to_be_bytes());

    let mut root = Bucket::new();
    root.put_bucket(ALARM, alarms);
    root.put_bucket(AUTH, auth);
    root.put_bucket(AUTH_ROLES, Bucket::new());
    root.put_bucket(AUTH_USERS, Bucket::new());
    root.put_bucket(CLUSTER, cluster);
    root.put_bucket(KEY, keys);
    root.put_bucket(LEASE, leases);
    root.put_bucket(MEMBERS, members);
    root.put_bucket(MEMBERS_REMOVED, Bucket::new());
    root.put_bucket(META, meta);
    bbolt::write(&root)
}

/// What an etcd database holds, as raftkine keeps it.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The key space, leases and alarms (members are not read: a restore makes a new cluster).
    pub history: History,
    /// etcd had authentication on (raftkine does not restore users and roles).
    pub auth_enabled: bool,
    /// The `clusterVersion` record, when present.
    pub cluster_version: Option<String>,
}

/// Reads an etcd database (made by etcd or by [`encode`]).
pub fn decode(db: &[u8]) -> Result<Decoded> {
    let root = bbolt::read(db)?;
    let keys = root
        .bucket(KEY)
        .ok_or_else(|| bad("no `key` bucket: not an etcd database"))?;
    let empty = Bucket::new();
    let meta = root.bucket(META).unwrap_or(&empty);

    let mut rows = Vec::with_capacity(keys.len());
    for (k, item) in keys.items() {
        let bbolt::Item::Value(v) = item else {
            return Err(bad("a bucket inside `key`"));
        };
        let (rev, tombstone) = parse_revision_key(k)?;
        let kv = KeyValue::decode(v.as_slice())
            .map_err(|e| bad(format!("row {}/{}: {e}", rev.main, rev.sub)))?;
        let kv = if tombstone {
            KeyValue {
                key: kv.key,
                mod_revision: rev.main,
                ..Default::default()
            }
        } else if kv.version == 0 {
            return Err(bad(format!(
                "row {}/{} has version 0 but is not a tombstone",
                rev.main, rev.sub
            )));
        } else {
            kv
        };
        rows.push((rev, kv));
    }

    let compact_of = |name: &[u8]| -> Result<Option<i64>> {
        meta.value(name)
            .map(|v| parse_revision_key(v).map(|(rev, _)| rev.main))
            .transpose()
    };
    let finished = compact_of(FINISHED_COMPACT)?;
    let scheduled = compact_of(SCHEDULED_COMPACT)?;
    let applied_index = meta
        .value(CONSISTENT_INDEX)
        .map(|v| u64_value(v, "consistent_index"))
        .transpose()?
        .unwrap_or(0);

    let mut leases = vec![];
    if let Some(bucket) = root.bucket(LEASE) {
        for (_, item) in bucket.items() {
            let bbolt::Item::Value(v) = item else {
                return Err(bad("a bucket inside `lease`"));
            };
            let lease = Lease::decode(v.as_slice()).map_err(|e| bad(format!("lease: {e}")))?;
            leases.push((lease.id, lease.ttl));
        }
    }

    let mut alarms = vec![];
    if let Some(bucket) = root.bucket(ALARM) {
        for (k, _) in bucket.items() {
            let a = AlarmMember::decode(k.as_slice()).map_err(|e| bad(format!("alarm: {e}")))?;
            alarms.push((a.member_id, a.alarm));
        }
    }

    let compact_revision = finished.unwrap_or(-1);
    let last = rows.last().map_or(1, |(rev, _)| rev.main);
    let mut history = History {
        revision: last.max(compact_revision).max(1),
        compact_revision,
        applied_index,
        rows,
        leases,
        members: vec![],
        alarms,
    };
    // A compaction etcd had scheduled but not finished: etcd finishes it when it starts.
    if let Some(scheduled) = scheduled {
        history.compact_to(scheduled);
    }
    let auth_enabled = root
        .bucket(AUTH)
        .and_then(|a| a.value(AUTH_ENABLED))
        .is_some_and(|v| v == [1]);
    let cluster_version = root
        .bucket(CLUSTER)
        .and_then(|c| c.value(CLUSTER_VERSION_KEY))
        .map(|v| String::from_utf8_lossy(v).into_owned());
    Ok(Decoded {
        history,
        auth_enabled,
        cluster_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::Member;

    fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec().into(),
            create_revision: create,
            mod_revision: modified,
            version,
            lease: 0,
        }
    }

    fn tombstone(key: &str, modified: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            mod_revision: modified,
            ..Default::default()
        }
    }

    #[test]
    fn history_round_trips_through_the_etcd_layout() {
        let history = History {
            revision: 6,
            compact_revision: 3,
            applied_index: 42,
            rows: vec![
                (Rev::new(3, 0), kv("a", "2", 2, 3, 2)),
                (Rev::new(4, 0), tombstone("a", 4)),
                (Rev::new(5, 0), kv("b", "1", 5, 5, 1)),
                (Rev::new(6, 0), kv("c", "1", 6, 6, 1)),
                (Rev::new(6, 1), kv("d", "1", 6, 6, 1)),
            ],
            // In bucket order (ids as unsigned big-endian), as the store lists them.
            leases: vec![(7, 60), (-5, 10)],
            members: vec![],
            alarms: vec![(9, 1)],
        };
        let db = encode(&history).expect("encode");
        let decoded = decode(&db).expect("decode");
        assert_eq!(decoded.history, history);
        assert!(!decoded.auth_enabled);
        assert_eq!(decoded.cluster_version.as_deref(), Some(CLUSTER_VERSION));
    }

    #[test]
    fn a_scheduled_compaction_is_finished_on_decode() {
        // etcd compacts in the background: a snapshot may hold the rows of a compaction it
        // scheduled but did not finish. etcd finishes it when it starts; so does decode.
        let history = History {
            revision: 4,
            compact_revision: -1,
            rows: vec![
                (Rev::new(2, 0), kv("a", "1", 2, 2, 1)),
                (Rev::new(3, 0), kv("a", "2", 2, 3, 2)),
                (Rev::new(4, 0), kv("b", "1", 4, 4, 1)),
            ],
            ..Default::default()
        };
        let mut root = bbolt::read(&encode(&history).expect("encode")).expect("bbolt");
        let mut meta = root.bucket(META).expect("meta").clone();
        meta.put(SCHEDULED_COMPACT, revision_key(Rev::new(3, 0), false));
        root.put_bucket(META, meta);
        let decoded = decode(&bbolt::write(&root).expect("write")).expect("decode");
        assert_eq!(decoded.history.compact_revision, 3);
        assert_eq!(decoded.history.rows, history.rows[1..].to_vec());
        assert_eq!(decoded.history.revision, 4);
    }

    #[test]
    fn tombstones_are_stored_as_etcd_stores_them() {
        let history = History {
            revision: 2,
            compact_revision: -1,
            rows: vec![
                (Rev::new(1, 0), kv("b", "1", 1, 1, 1)),
                (Rev::new(2, 0), tombstone("b", 2)),
            ],
            members: vec![Member {
                id: 0xbdae9bbc11dd390d,
                name: "default".into(),
                peer_ur_ls: vec!["http://127.0.0.1:23801".into()],
                client_ur_ls: vec!["http://127.0.0.1:23791".into()],
                is_learner: false,
            }],
            ..Default::default()
        };
        let root = bbolt::read(&encode(&history).expect("encode")).expect("bbolt");
        let keys = root.bucket(KEY).expect("key bucket");
        let mut tomb_key = vec![0, 0, 0, 0, 0, 0, 0, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 0];
        tomb_key.push(b't');
        // etcd's own bytes for the tombstone of "b": KeyValue{key: "b"}.
        assert_eq!(keys.value(&tomb_key), Some(&[0x0a, 0x01, b'b'][..]));
        let members = root.bucket(MEMBERS).expect("members");
        let json: serde_json::Value =
            serde_json::from_slice(members.value(b"bdae9bbc11dd390d").expect("member"))
                .expect("json");
        assert_eq!(json["id"], serde_json::json!(0xbdae9bbc11dd390du64));
        assert_eq!(json["name"], "default");
        assert!(root
            .bucket(META)
            .expect("meta")
            .value(FINISHED_COMPACT)
            .is_none());
    }
}
