//! Unit tests of the apply function and of reads at revisions, on a temporary sled store.

use super::*;
use crate::command::{Command, Op};
use crate::proto::etcdserverpb::{
    compare, range_request, request_op, response_op, CompactionRequest, Compare,
    DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use crate::proto::mvccpb::event::EventType;

/// The store in `dir`, opened again if it exists.
///
/// A store dropped in this process lets go of sled's file lock only once sled's background
/// flusher has noticed and ended, a moment later (a restarted process has no such wait), so
/// opening the same dir again is retried while the lock is still held.
fn open_store(dir: &std::path::Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir) {
            Ok(store) => return store,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("open: {e:?}"),
        }
    }
}

struct Fixture {
    store: Store,
    index: u64,
}

impl Fixture {
    /// The store in `dir` (opened again if it exists), whose last applied raft index is `index`.
    fn open(dir: &std::path::Path, index: u64) -> Fixture {
        Fixture {
            store: open_store(dir),
            index,
        }
    }

    fn new() -> Fixture {
        Fixture {
            store: Store::temporary().expect("temporary store"),
            index: 0,
        }
    }

    fn apply(&mut self, op: Op) -> Result<Applied> {
        self.index += 1;
        self.store
            .apply(self.index, &Command::new(op))
            .expect("storage works")
    }

    fn put(&mut self, key: &str, value: &str) -> Applied {
        self.apply(Op::Put(PutRequest {
            key: key.into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        }))
        .expect("put")
    }

    fn delete(&mut self, key: &str, end: &str) -> Applied {
        self.apply(Op::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: end.into(),
            prev_kv: true,
        }))
        .expect("delete")
    }

    fn compact(&mut self, revision: i64) -> Result<Applied> {
        self.apply(Op::Compact(CompactionRequest {
            revision,
            physical: true,
        }))
    }

    fn range(&self, key: &str, end: &str, revision: i64) -> Result<Vec<(String, String)>> {
        let resp = self.store.range(&RangeRequest {
            key: key.into(),
            range_end: end.into(),
            revision,
            ..Default::default()
        })?;
        Ok(resp
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect())
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_new_store_is_at_revision_one() {
    let f = Fixture::new();
    assert_eq!(f.store.revision(), 1);
    assert_eq!(f.range("a", "\0", 0).expect("range"), vec![]);
}

#[test]
fn put_assigns_revisions_versions_and_create_revision() {
    let mut f = Fixture::new();
    let first = f.put("a", "1");
    assert_eq!(first.revision, 2);
    let second = f.put("a", "2");
    assert_eq!(second.revision, 3);
    let event = &second.events[0];
    let kv = event.kv.as_ref().expect("kv");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(
        event.prev_kv.as_ref().map(|p| p.value.to_vec()),
        Some(b"1".to_vec())
    );
}

#[test]
fn reads_at_past_revisions_see_the_past() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 2
    f.put("b", "1"); // 3
    f.put("a", "2"); // 4
    f.delete("b", ""); // 5
    f.put("c", "1"); // 6
    assert_eq!(f.range("a", "\0", 2).expect("r"), pairs(&[("a", "1")]));
    assert_eq!(
        f.range("a", "\0", 3).expect("r"),
        pairs(&[("a", "1"), ("b", "1")])
    );
    assert_eq!(
        f.range("a", "\0", 4).expect("r"),
        pairs(&[("a", "2"), ("b", "1")])
    );
    assert_eq!(f.range("a", "\0", 5).expect("r"), pairs(&[("a", "2")]));
    assert_eq!(
        f.range("a", "\0", 0).expect("r"),
        pairs(&[("a", "2"), ("c", "1")])
    );
    assert!(matches!(f.range("a", "", 7), Err(Error::FutureRevision)));
}

#[test]
fn a_key_recreated_after_delete_starts_a_new_generation() {
    let mut f = Fixture::new();
    f.put("k", "1"); // 2
    f.delete("k", ""); // 3
    let again = f.put("k", "2"); // 4
    let kv = again.events[0].kv.as_ref().expect("kv");
    assert_eq!((kv.create_revision, kv.version), (4, 1));
    assert!(again.events[0].prev_kv.is_none());
}

#[test]
fn keys_with_zero_bytes_keep_their_order() {
    let mut f = Fixture::new();
    for k in ["a\u{0}b", "a", "a\u{0}", "a\u{1}"] {
        f.put(k, "v");
    }
    let rev = f.store.revision();
    f.put("zz", "v");
    let keys: Vec<String> = f
        .range("a", "b", rev)
        .expect("range")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec!["a", "a\u{0}", "a\u{0}b", "a\u{1}"]);
}

#[test]
fn limit_count_and_more() {
    let mut f = Fixture::new();
    for k in ["a", "b", "c", "d"] {
        f.put(k, "v");
    }
    let resp = f
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "z".into(),
            limit: 2,
            ..Default::default()
        })
        .expect("range");
    assert_eq!(resp.kvs.len(), 2);
    assert_eq!(resp.count, 4);
    assert!(resp.more);
    let sorted = f
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "z".into(),
            limit: 1,
            sort_order: range_request::SortOrder::Descend as i32,
            sort_target: range_request::SortTarget::Mod as i32,
            ..Default::default()
        })
        .expect("range");
    assert_eq!(sorted.kvs[0].key, b"d");
}

#[test]
fn compaction_keeps_the_newest_row_at_or_below_it() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 2
    f.put("a", "2"); // 3
    f.put("b", "1"); // 4
    f.delete("b", ""); // 5
    f.put("a", "3"); // 6
    f.compact(5).expect("compact");
    assert_eq!(f.store.compact_revision(), 5);
    assert!(matches!(f.range("a", "\0", 4), Err(Error::Compacted)));
    // At the compaction revision itself the view is intact.
    assert_eq!(f.range("a", "\0", 5).expect("r"), pairs(&[("a", "2")]));
    assert_eq!(f.range("a", "\0", 6).expect("r"), pairs(&[("a", "3")]));
    // Compacting again at or below is refused, above the current revision too.
    assert!(matches!(f.compact(5), Err(Error::Compacted)));
    assert!(matches!(f.compact(100), Err(Error::FutureRevision)));
    // History above the compaction is still replayable; below it is gone.
    assert!(matches!(
        f.store.events_between(4, 6),
        Err(Error::Compacted)
    ));
    let events = f.store.events_between(5, 6).expect("history");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, 6);
}

#[test]
fn compaction_removes_superseded_rows_physically() {
    let mut f = Fixture::new();
    for i in 0..10 {
        f.put("a", &i.to_string());
    }
    let rows_before = f.store.table.scan_prefix([schema::ROW]).count();
    f.compact(f.store.revision()).expect("compact");
    let rows_after = f.store.table.scan_prefix([schema::ROW]).count();
    assert_eq!((rows_before, rows_after), (10, 1));
    // A second compaction only looks at what changed since the first.
    f.put("a", "x");
    f.compact(f.store.revision()).expect("compact");
    assert_eq!(f.store.table.scan_prefix([schema::ROW]).count(), 1);
    assert_eq!(f.range("a", "", 0).expect("r"), pairs(&[("a", "x")]));
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        })),
    }
}

fn get_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn mod_equals(key: &str, revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.into(),
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
        range_end: vec![],
    }
}

#[test]
fn txn_is_one_revision_with_sub_revisions_and_sees_its_own_writes() {
    let mut f = Fixture::new();
    let applied = f
        .apply(Op::Txn(TxnRequest {
            compare: vec![mod_equals("a", 0)],
            success: vec![put_op("a", "1"), put_op("b", "1"), get_op("a")],
            failure: vec![],
        }))
        .expect("txn");
    assert_eq!(applied.revision, 2);
    assert_eq!(applied.events.len(), 2);
    let Response::Txn(resp) = applied.response else {
        panic!("txn answer expected")
    };
    assert!(resp.succeeded);
    let Some(response_op::Response::ResponseRange(get)) = &resp.responses[2].response else {
        panic!("range answer expected")
    };
    assert_eq!(get.kvs[0].value.as_ref(), b"1");
    assert_eq!(get.header.as_ref().map(|h| h.revision), Some(2));
}

#[test]
fn failed_compare_runs_the_else_branch_without_a_new_revision() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 2
    let applied = f
        .apply(Op::Txn(TxnRequest {
            compare: vec![mod_equals("a", 1)],
            success: vec![put_op("a", "2")],
            failure: vec![get_op("a")],
        }))
        .expect("txn");
    assert_eq!(applied.revision, 2);
    assert!(applied.events.is_empty());
    let Response::Txn(resp) = applied.response else {
        panic!("txn answer expected")
    };
    assert!(!resp.succeeded);
}

#[test]
fn value_compare_on_a_missing_key_is_false() {
    let mut f = Fixture::new();
    let applied = f
        .apply(Op::Txn(TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Value as i32,
                key: "nope".into(),
                target_union: Some(compare::TargetUnion::Value(vec![])),
                range_end: vec![],
            }],
            success: vec![],
            failure: vec![],
        }))
        .expect("txn");
    let Response::Txn(resp) = applied.response else {
        panic!("txn answer expected")
    };
    assert!(!resp.succeeded);
}

#[test]
fn put_with_unknown_lease_fails_and_changes_nothing() {
    let mut f = Fixture::new();
    let err = f.apply(Op::Put(PutRequest {
        key: "a".into(),
        lease: 42,
        ..Default::default()
    }));
    assert!(matches!(err, Err(Error::LeaseNotFound)));
    assert_eq!(f.store.revision(), 1);
    assert_eq!(f.store.applied_index(), 1);
}

#[test]
fn lease_revoke_deletes_attached_keys_in_one_revision() {
    let mut f = Fixture::new();
    f.apply(Op::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 7 }))
        .expect("grant");
    for k in ["x", "y"] {
        f.apply(Op::Put(PutRequest {
            key: k.into(),
            lease: 7,
            ..Default::default()
        }))
        .expect("put");
    }
    assert_eq!(f.store.lease_keys(7).expect("keys").len(), 2);
    let revoked = f
        .apply(Op::LeaseRevoke(LeaseRevokeRequest { id: 7 }))
        .expect("revoke");
    assert_eq!(revoked.revision, 4);
    assert_eq!(revoked.events.len(), 2);
    assert!(revoked
        .events
        .iter()
        .all(|e| e.r#type == EventType::Delete as i32));
    assert_eq!(f.range("a", "\0", 0).expect("r"), vec![]);
    assert!(f.store.leases().expect("leases").is_empty());
    assert!(matches!(
        f.apply(Op::LeaseRevoke(LeaseRevokeRequest { id: 7 })),
        Err(Error::LeaseNotFound)
    ));
}

#[test]
fn replaying_an_applied_index_changes_nothing() {
    let mut f = Fixture::new();
    f.put("a", "1");
    let again = f.store.apply(
        1,
        &Command::new(Op::Put(PutRequest {
            key: "a".into(),
            value: "2".into(),
            ..Default::default()
        })),
    );
    assert!(matches!(again, Ok(Err(_))));
    assert_eq!(f.range("a", "", 0).expect("r"), pairs(&[("a", "1")]));
}

#[test]
fn a_group_applies_like_one_command_after_another() {
    let grouped = Fixture::new();
    let mut single = Fixture::new();
    let put = |k: &str, v: &str, lease: i64| {
        Command::new(Op::Put(PutRequest {
            key: k.into(),
            value: v.as_bytes().to_vec().into(),
            lease,
            prev_kv: true,
            ..Default::default()
        }))
    };
    let cmds = vec![
        put("a", "1", 0),
        put("a", "2", 0),
        put("b", "1", 99), // fails: unknown lease, writes nothing
        Command::new(Op::Txn(TxnRequest {
            compare: vec![mod_equals("a", 3)],
            success: vec![put_op("b", "2"), get_op("a")],
            failure: vec![],
        })),
        Command::new(Op::DeleteRange(DeleteRangeRequest {
            key: "a".into(),
            range_end: vec![],
            prev_kv: true,
        })),
    ];
    let indexed: Vec<(u64, &Command)> = cmds.iter().zip(1u64..).map(|(c, i)| (i, c)).collect();
    let group_answers = grouped.store.apply_group(&indexed).expect("storage works");
    for cmd in &cmds {
        single.index += 1;
        let one = single
            .store
            .apply(single.index, cmd)
            .expect("storage works");
        let from_group = &group_answers[single.index as usize - 1];
        assert_eq!(one.is_ok(), from_group.is_ok(), "command {}", single.index);
        if let (Ok(a), Ok(b)) = (&one, from_group) {
            assert_eq!(a.revision, b.revision);
            assert_eq!(a.events, b.events);
            assert_eq!(format!("{:?}", a.response), format!("{:?}", b.response));
        }
    }
    assert!(matches!(group_answers[2], Err(Error::LeaseNotFound)));
    assert_eq!(grouped.store.revision(), single.store.revision());
    assert_eq!(grouped.store.applied_index(), 5);
    assert_eq!(
        grouped
            .store
            .hash_kv(grouped.store.revision())
            .expect("hash")
            .0,
        single
            .store
            .hash_kv(single.store.revision())
            .expect("hash")
            .0
    );
    assert_eq!(
        grouped.range("a", "\0", 0).expect("r"),
        pairs(&[("b", "2")])
    );
}

#[test]
fn the_key_index_is_rebuilt_at_start_and_an_older_layout_is_dropped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let mut f = Fixture::open(tmp.path(), 0);
        f.put("a", "1");
        f.put("b", "2");
        f.put("a", "3");
        f.delete("b", "");
        f.put("c", "4");
        // What an older raftkine also kept in the tree.
        f.store
            .table
            .insert(b"la", b"old live row".to_vec())
            .unwrap();
        f.store.table.insert(b"kb\0\x01", b"".to_vec()).unwrap();
        f.store.flush().expect("flush");
    }
    let f = Fixture::open(tmp.path(), 5);
    assert_eq!(
        f.range("a", "\0", 0).expect("r"),
        pairs(&[("a", "3"), ("c", "4")])
    );
    assert_eq!(
        f.range("a", "\0", 3).expect("r"),
        pairs(&[("a", "1"), ("b", "2")])
    );
    assert_eq!(f.store.count_live_keys().expect("count"), 2);
    assert!(f
        .store
        .table
        .scan_prefix([schema::OLD_LIVE])
        .next()
        .is_none());
    assert!(f
        .store
        .table
        .scan_prefix([schema::OLD_INDEX])
        .next()
        .is_none());
}

#[test]
fn rows_a_crash_left_above_the_revision_are_removed_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let revision = {
        let mut f = Fixture::open(tmp.path(), 0);
        f.put("a", "1");
        f.put("b", "2");
        // A command written row by row whose META_STATE never made it: its row and owners
        // are there, nothing else.
        let orphan = KeyValue {
            key: b"c".to_vec(),
            create_revision: f.store.revision() + 1,
            mod_revision: f.store.revision() + 1,
            version: 1,
            value: b"lost".to_vec().into(),
            lease: 0,
        };
        f.store
            .table
            .insert(
                schema::row_key(schema::Rev::new(f.store.revision() + 1, 0)),
                orphan.encode_to_vec(),
            )
            .unwrap();
        let owner = schema::Owner {
            rev: schema::Rev::new(f.store.revision() + 1, 0),
            key: b"c".to_vec(),
            tombstone: false,
        };
        f.store
            .table
            .insert(
                schema::owners_key(owner.rev),
                schema::encode_owners(&[owner]),
            )
            .unwrap();
        f.store.flush().expect("flush");
        f.store.revision()
    };
    let mut f = Fixture::open(tmp.path(), 2);
    assert_eq!(f.store.revision(), revision);
    assert_owners_match_rows(&f.store);
    assert_eq!(
        f.range("a", "\0", 0).expect("r"),
        pairs(&[("a", "1"), ("b", "2")])
    );
    // Applied again (as the raft log would), the command gets the same revision.
    let again = f.put("c", "again");
    assert_eq!(again.revision, revision + 1);
    assert_eq!(
        f.range("a", "\0", 0).expect("r"),
        pairs(&[("a", "1"), ("b", "2"), ("c", "again")])
    );
}

#[test]
fn a_table_with_the_older_meta_names_keeps_its_revision_and_applied_index() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let mut f = Fixture::open(tmp.path(), 0);
        f.put("a", "1");
        f.put("a", "2");
        let t = &f.store.table;
        t.remove(schema::META_STATE).unwrap();
        t.insert(schema::OLD_META_REVISION, &schema::encode_i64(3))
            .unwrap();
        t.insert(schema::OLD_META_APPLIED, &schema::encode_i64(2))
            .unwrap();
        f.store.flush().expect("flush");
    }
    let store = open_store(tmp.path());
    assert_eq!(store.revision(), 3);
    assert_eq!(store.applied_index(), 2);
    assert!(!store.table.contains_key(schema::OLD_META_REVISION).unwrap());
}

/// The revisions of all rows, and of all row owners, as the table holds them.
fn rows_and_owners(store: &Store) -> (Vec<schema::Rev>, Vec<schema::Rev>) {
    let rows = store
        .table
        .scan_prefix([schema::ROW])
        .map(|item| schema::Rev::from_bytes(&item.unwrap().0[1..]).unwrap())
        .collect();
    let owners = store
        .table
        .scan_prefix([schema::ROW_OWNER])
        .flat_map(|item| schema::decode_owners(&item.unwrap().1).unwrap())
        .map(|o| o.rev)
        .collect();
    (rows, owners)
}

fn assert_owners_match_rows(store: &Store) {
    let (rows, owners) = rows_and_owners(store);
    assert!(!rows.is_empty());
    assert_eq!(owners, rows);
}

#[test]
fn row_owners_follow_writes_and_compactions() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 2
    f.put("b", "1"); // 3
    f.compact(3).expect("compact");
    assert_owners_match_rows(&f.store);
    f.put("a", "2"); // 4
    f.delete("b", ""); // 5
    f.put("c", "1"); // 6
                     // a@2 goes now: its owner is in an entry written before the previous compaction.
    f.compact(6).expect("compact");
    assert_owners_match_rows(&f.store);
    let (rows, _) = rows_and_owners(&f.store);
    assert_eq!(rows, vec![schema::Rev::new(4, 0), schema::Rev::new(6, 0)]);
    assert_eq!(
        f.range("a", "\0", 0).expect("r"),
        pairs(&[("a", "2"), ("c", "1")])
    );
}

#[test]
fn a_table_without_row_owners_gets_them_when_opened() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let mut f = Fixture::open(tmp.path(), 0);
        for i in 0..600 {
            f.put(&format!("k{:03}", i % 300), &i.to_string());
        }
        f.delete("k000", "k010");
        // What a raftkine that kept no owners left.
        let t = &f.store.table;
        for item in t.scan_prefix([schema::ROW_OWNER]) {
            t.remove(item.unwrap().0).unwrap();
        }
        t.remove(schema::META_OWNERS_STATE).unwrap();
        f.store.flush().expect("flush");
    }
    let f = Fixture::open(tmp.path(), 601);
    assert_owners_match_rows(&f.store);
    assert_eq!(f.store.count_live_keys().expect("count"), 290);
    assert_eq!(
        f.range("k009", "k011", 0).expect("r"),
        pairs(&[("k010", "310")])
    );
    assert_eq!(f.range("k000", "", 2).expect("r"), pairs(&[("k000", "0")]));
}

#[test]
fn rows_an_older_member_wrote_without_owners_are_found_when_opened() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let mut f = Fixture::open(tmp.path(), 0);
        f.put("a", "1");
        // An older raftkine applied a put of "b": a row and the state, no owner.
        let rev = f.store.revision() + 1;
        let kv = KeyValue {
            key: b"b".to_vec(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            value: b"2".to_vec().into(),
            lease: 0,
        };
        let t = &f.store.table;
        t.insert(
            schema::row_key(schema::Rev::new(rev, 0)),
            kv.encode_to_vec(),
        )
        .unwrap();
        t.insert(schema::META_STATE, &schema::encode_state(2, rev))
            .unwrap();
        f.store.flush().expect("flush");
    }
    let f = Fixture::open(tmp.path(), 2);
    assert_eq!(
        f.range("a", "\0", 0).expect("r"),
        pairs(&[("a", "1"), ("b", "2")])
    );
    assert_owners_match_rows(&f.store);
}

#[test]
fn snapshots_with_and_without_row_owners_install_with_owners() {
    let mut source = Fixture::new();
    source.put("a", "1");
    source.put("b", "2");
    source.put("a", "3");
    let (index, blob) = source.store.raft_snapshot().expect("snapshot");
    let without: Vec<_> = snapshot::parse_snapshot(&blob)
        .expect("parse")
        .into_iter()
        .filter(|(k, _)| k.first() != Some(&schema::ROW_OWNER) && *k != schema::META_OWNERS_STATE)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let older_blob = snapshot::encode_snapshot(without);
    for blob in [blob, older_blob] {
        let target = Fixture::new();
        target
            .store
            .install_snapshot(&blob, index)
            .expect("install");
        assert_owners_match_rows(&target.store);
        assert_eq!(
            target.store.table.get(schema::META_OWNERS_STATE).unwrap(),
            target.store.table.get(schema::META_STATE).unwrap()
        );
        assert_eq!(
            target.range("a", "\0", 0).expect("r"),
            pairs(&[("a", "3"), ("b", "2")])
        );
        assert_eq!(target.range("a", "", 2).expect("r"), pairs(&[("a", "1")]));
    }
}

#[test]
fn compaction_takes_single_rows_out_of_a_group_s_owners() {
    let mut f = Fixture::new();
    let put = |k: String| {
        Command::new(Op::Put(PutRequest {
            key: k.into_bytes(),
            value: b"v".to_vec().into(),
            ..Default::default()
        }))
    };
    // Two groups of 40 puts: one owners entry each. The second overwrites every third key.
    let first: Vec<Command> = (0..40).map(|i| put(format!("g{i:02}"))).collect();
    let second: Vec<Command> = (0..40)
        .step_by(3)
        .map(|i| put(format!("g{i:02}")))
        .collect();
    for cmds in [first, second] {
        let indexed: Vec<(u64, &Command)> = cmds
            .iter()
            .map(|c| {
                f.index += 1;
                (f.index, c)
            })
            .collect();
        for answer in f.store.apply_group(&indexed).expect("storage works") {
            answer.expect("put");
        }
    }
    assert_eq!(f.store.table.scan_prefix([schema::ROW_OWNER]).count(), 2);
    f.compact(f.store.revision()).expect("compact");
    assert_owners_match_rows(&f.store);
    let (rows, _) = rows_and_owners(&f.store);
    assert_eq!(rows.len(), 40);
    assert_eq!(f.store.table.scan_prefix([schema::ROW_OWNER]).count(), 2);
    assert_eq!(f.range("g", "h", 0).expect("r").len(), 40);
}

#[test]
fn the_table_hash_does_not_depend_on_how_the_owners_are_grouped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let before = {
        let mut f = Fixture::open(tmp.path(), 0);
        for i in 0..300 {
            f.put(&format!("k{i:03}"), "v");
        }
        let hash = f.store.hash_all().expect("hash");
        // As an older raftkine left it: the owners are rebuilt, in other groups, when opened.
        let t = &f.store.table;
        for item in t.scan_prefix([schema::ROW_OWNER]) {
            t.remove(item.unwrap().0).unwrap();
        }
        t.remove(schema::META_OWNERS_STATE).unwrap();
        f.store.flush().expect("flush");
        hash
    };
    let store = open_store(tmp.path());
    assert_owners_match_rows(&store);
    assert_eq!(store.table.scan_prefix([schema::ROW_OWNER]).count(), 2);
    assert_eq!(store.hash_all().expect("hash"), before);
}
