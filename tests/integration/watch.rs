//! Watch: streams, ranges, history replay, prev_kv, filters, progress, ids, compaction.

use std::time::Duration;

use etcd_client::{ConnectOptions, EventType, Txn, TxnOp, WatchFilterType, WatchOptions};

use crate::common::*;

#[tokio::test]
async fn watch_single_key_put_and_delete() {
    let (_s, mut c) = start().await;
    let rev0 = current_rev(&mut c).await;
    let mut w = c.watch("k", None).await.unwrap();
    let created = next_resp(&mut w).await;
    assert!(created.created());
    assert_eq!(
        hrev(created.header()),
        rev0,
        "created response carries the current revision"
    );
    let id = created.watch_id();

    let r1 = put(&mut c, "k", "v1").await;
    put(&mut c, "k2", "other").await; // not watched
    put(&mut c, "j", "other").await;
    let r2 = put(&mut c, "k", "v2").await;
    let r3 = hrev(c.delete("k", None).await.unwrap().header());

    let evs = next_events(&mut w, id, 3).await;
    let got: Vec<_> = evs.iter().map(ev).collect();
    assert_eq!(
        got,
        [
            put_ev("k", "v1", r1),
            put_ev("k", "v2", r2),
            del_ev("k", r3)
        ]
    );
    let kv = evs[0].kv().unwrap();
    assert_eq!((kv.create_revision(), kv.version()), (r1, 1));
    let kv = evs[1].kv().unwrap();
    assert_eq!((kv.create_revision(), kv.version()), (r1, 2));
    let kv = evs[2].kv().unwrap();
    assert_eq!(
        (kv.create_revision(), kv.version(), kv.lease()),
        (0, 0, 0),
        "a delete event's kv has only key and mod_revision"
    );
    assert!(
        evs.iter().all(|e| e.prev_kv().is_none()),
        "prev_kv not requested"
    );
    expect_silence(&mut w, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn watch_prefix_range_and_from_key() {
    let (_s, mut c) = start().await;
    let mut w = c
        .watch("p/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let pid = expect_created(&mut w).await;
    let mut wr = c
        .watch("b", Some(WatchOptions::new().with_range("d")))
        .await
        .unwrap();
    let rid = expect_created(&mut wr).await;
    let mut wf = c
        .watch("m", Some(WatchOptions::new().with_from_key()))
        .await
        .unwrap();
    let fid = expect_created(&mut wf).await;

    let ra = put(&mut c, "p/a", "1").await;
    put(&mut c, "p", "no").await;
    put(&mut c, "a", "no").await;
    let rb = put(&mut c, "b", "1").await;
    let rc = put(&mut c, "c/x", "1").await;
    put(&mut c, "d", "no").await;
    let rz = put(&mut c, "z", "1").await;

    let got: Vec<_> = next_events(&mut w, pid, 1).await.iter().map(ev).collect();
    assert_eq!(got, [put_ev("p/a", "1", ra)]);
    let got: Vec<_> = next_events(&mut wr, rid, 2).await.iter().map(ev).collect();
    assert_eq!(got, [put_ev("b", "1", rb), put_ev("c/x", "1", rc)]);
    let got: Vec<_> = next_events(&mut wf, fid, 3).await.iter().map(ev).collect();
    assert_eq!(
        got,
        [
            put_ev("p/a", "1", ra),
            put_ev("p", "no", ra + 1),
            put_ev("z", "1", rz)
        ]
    );
    expect_silence(&mut w, Duration::from_millis(200)).await;
    expect_silence(&mut wr, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn many_watches_on_one_stream_and_cancel() {
    let (_s, mut c) = start().await;
    let mut w = c.watch("a", None).await.unwrap();
    let ida = expect_created(&mut w).await;
    w.watch("b", None).await.unwrap();
    let idb = expect_created(&mut w).await;
    w.watch("", Some(WatchOptions::new().with_all_keys()))
        .await
        .unwrap();
    let idall = expect_created(&mut w).await;
    assert!(
        ida != idb && idb != idall && ida != idall,
        "distinct watch ids"
    );

    let ra = put(&mut c, "a", "1").await;
    // One revision, seen by two watchers on the stream.
    let mut seen = std::collections::BTreeMap::<i64, Vec<_>>::new();
    while seen.values().map(Vec::len).sum::<usize>() < 2 {
        let r = next_resp(&mut w).await;
        for e in r.events() {
            seen.entry(r.watch_id()).or_default().push(ev(e));
        }
    }
    assert_eq!(seen[&ida], [put_ev("a", "1", ra)]);
    assert_eq!(seen[&idall], [put_ev("a", "1", ra)]);
    assert!(!seen.contains_key(&idb));

    // Canceling an unknown watch id is ignored: no response, the stream goes on.
    w.cancel(9999).await.unwrap();
    expect_silence_strict(&mut w, Duration::from_millis(300)).await;

    // Cancel "a": a canceled response for it, then only "b" and "all" get events.
    w.cancel(ida).await.unwrap();
    let r = next_resp(&mut w).await;
    assert!(r.canceled(), "expected cancel response, got {r:?}");
    assert_eq!(r.watch_id(), ida);
    assert!(r.events().is_empty());

    put(&mut c, "a", "2").await;
    let rb = put(&mut c, "b", "1").await;
    let mut by_id = std::collections::BTreeMap::<i64, Vec<_>>::new();
    while by_id.values().map(Vec::len).sum::<usize>() < 3 {
        let r = next_resp(&mut w).await;
        for e in r.events() {
            by_id.entry(r.watch_id()).or_default().push(ev(e));
        }
    }
    assert!(
        !by_id.contains_key(&ida),
        "canceled watch got events: {by_id:?}"
    );
    assert_eq!(by_id[&idb], [put_ev("b", "1", rb)]);
    assert_eq!(by_id[&idall].len(), 2);
    expect_silence(&mut w, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn watch_from_past_revision_replays_history() {
    let (_s, mut c) = start().await;
    let r1 = put(&mut c, "h/a", "1").await;
    let r2 = put(&mut c, "h/b", "1").await;
    let r3 = put(&mut c, "h/a", "2").await;
    let r4 = hrev(c.delete("h/b", None).await.unwrap().header());
    let t = Txn::new().and_then(vec![
        TxnOp::put("h/x", "t", None),
        TxnOp::put("h/y", "t", None),
        TxnOp::delete("h/a", None),
    ]);
    let r5 = hrev(c.txn(t).await.unwrap().header());

    let mut w = c
        .watch(
            "h/",
            Some(WatchOptions::new().with_prefix().with_start_revision(r2)),
        )
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    let got: Vec<_> = next_events(&mut w, id, 6).await.iter().map(ev).collect();
    assert_eq!(
        got,
        [
            put_ev("h/b", "1", r2),
            put_ev("h/a", "2", r3),
            del_ev("h/b", r4),
            put_ev("h/x", "t", r5),
            put_ev("h/y", "t", r5),
            del_ev("h/a", r5),
        ]
    );
    // Live events continue after the replay.
    let r6 = put(&mut c, "h/z", "live").await;
    let got: Vec<_> = next_events(&mut w, id, 1).await.iter().map(ev).collect();
    assert_eq!(got, [put_ev("h/z", "live", r6)]);

    // Replay from revision 1 (everything) on a second stream.
    let mut w = c
        .watch("h/a", Some(WatchOptions::new().with_start_revision(1)))
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    let got: Vec<_> = next_events(&mut w, id, 3).await.iter().map(ev).collect();
    assert_eq!(
        got,
        [
            put_ev("h/a", "1", r1),
            put_ev("h/a", "2", r3),
            del_ev("h/a", r5)
        ]
    );
}

#[tokio::test]
async fn txn_events_arrive_in_one_response() {
    let (_s, mut c) = start().await;
    let mut w = c
        .watch("t/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    let ops: Vec<TxnOp> = (0..10)
        .map(|i| TxnOp::put(format!("t/{i:02}"), "v", None))
        .collect();
    let rev = hrev(c.txn(Txn::new().and_then(ops)).await.unwrap().header());
    let r = next_resp(&mut w).await;
    assert_eq!(r.watch_id(), id);
    assert_eq!(
        r.events().len(),
        10,
        "all events of a revision in one response"
    );
    assert_eq!(hrev(r.header()), rev);
    let keys: Vec<_> = r.events().iter().map(|e| ev(e).1).collect();
    let want: Vec<_> = (0..10).map(|i| format!("t/{i:02}")).collect();
    assert_eq!(keys, want, "events in the txn's op order");
}

#[tokio::test]
async fn watch_from_current_and_future_revision() {
    let (_s, mut c) = start().await;
    put(&mut c, "k", "old").await;
    let cur = current_rev(&mut c).await;
    // start_revision = current: the event at `cur` is replayed.
    let mut w = c
        .watch("k", Some(WatchOptions::new().with_start_revision(cur)))
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    let got: Vec<_> = next_events(&mut w, id, 1).await.iter().map(ev).collect();
    assert_eq!(got, [put_ev("k", "old", cur)]);
    // start_revision = current + 1: only new writes (kube-apiserver's R+1).
    let mut w2 = c
        .watch("k", Some(WatchOptions::new().with_start_revision(cur + 1)))
        .await
        .unwrap();
    let id2 = expect_created(&mut w2).await;
    // A future start revision: waits for that revision.
    let mut w3 = c
        .watch("k", Some(WatchOptions::new().with_start_revision(cur + 2)))
        .await
        .unwrap();
    let id3 = expect_created(&mut w3).await;
    expect_silence(&mut w2, Duration::from_millis(200)).await;
    let r1 = put(&mut c, "k", "new").await;
    let r2 = put(&mut c, "k", "newer").await;
    let got: Vec<_> = next_events(&mut w2, id2, 2).await.iter().map(ev).collect();
    assert_eq!(got, [put_ev("k", "new", r1), put_ev("k", "newer", r2)]);
    let got: Vec<_> = next_events(&mut w3, id3, 1).await.iter().map(ev).collect();
    assert_eq!(got, [put_ev("k", "newer", r2)]);
}

#[tokio::test]
async fn watch_prev_kv() {
    let (_s, mut c) = start().await;
    put(&mut c, "before", "b0").await;
    let mut w = c
        .watch(
            "",
            Some(WatchOptions::new().with_all_keys().with_prev_key()),
        )
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    let r1 = put(&mut c, "k", "v1").await;
    put(&mut c, "k", "v2").await;
    c.delete("k", None).await.unwrap();
    put(&mut c, "k", "v3").await;
    let rb = put(&mut c, "before", "b1").await;
    let evs = next_events(&mut w, id, 5).await;
    assert!(evs[0].prev_kv().is_none(), "create: no prev_kv");
    let p = evs[1].prev_kv().expect("update has prev_kv");
    assert_eq!(
        (p.value(), p.mod_revision(), p.version()),
        (&b"v1"[..], r1, 1)
    );
    assert_eq!(evs[2].event_type(), EventType::Delete);
    let p = evs[2].prev_kv().expect("delete has prev_kv");
    assert_eq!((p.value(), p.version()), (&b"v2"[..], 2));
    assert!(
        evs[3].prev_kv().is_none(),
        "re-create after delete: no prev_kv"
    );
    let p = evs[4]
        .prev_kv()
        .expect("update of a key older than the watch");
    assert_eq!(p.value(), b"b0");
    assert_eq!(evs[4].kv().unwrap().mod_revision(), rb);
}

#[tokio::test]
async fn watch_filters_noput_and_nodelete() {
    let (_s, mut c) = start().await;
    let mut np = c
        .watch(
            "f",
            Some(WatchOptions::new().with_filters([WatchFilterType::NoPut])),
        )
        .await
        .unwrap();
    let npid = expect_created(&mut np).await;
    let mut nd = c
        .watch(
            "f",
            Some(WatchOptions::new().with_filters([WatchFilterType::NoDelete])),
        )
        .await
        .unwrap();
    let ndid = expect_created(&mut nd).await;
    let r1 = put(&mut c, "f", "1").await;
    let r2 = hrev(c.delete("f", None).await.unwrap().header());
    let r3 = put(&mut c, "f", "2").await;
    let r4 = hrev(c.delete("f", None).await.unwrap().header());
    let got: Vec<_> = next_events(&mut np, npid, 2).await.iter().map(ev).collect();
    assert_eq!(got, [del_ev("f", r2), del_ev("f", r4)]);
    let got: Vec<_> = next_events(&mut nd, ndid, 2).await.iter().map(ev).collect();
    assert_eq!(got, [put_ev("f", "1", r1), put_ev("f", "2", r3)]);
    expect_silence(&mut np, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn progress_request_reports_the_current_revision() {
    let (_s, mut c) = start().await;
    let mut w = c
        .watch("p/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    put(&mut c, "p/a", "1").await;
    put(&mut c, "other", "1").await;
    let rev = put(&mut c, "other", "2").await;
    let evs = next_events(&mut w, id, 1).await;
    assert_eq!(ev(&evs[0]).1, "p/a");

    w.request_progress().await.unwrap();
    let r = next_resp(&mut w).await;
    assert!(
        r.events().is_empty(),
        "progress response has no events: {r:?}"
    );
    assert!(!r.created() && !r.canceled());
    assert_eq!(
        r.watch_id(),
        -1,
        "a progress response to a request has watch_id -1"
    );
    assert_eq!(
        hrev(r.header()),
        rev,
        "progress revision is the store revision once the watcher is synced"
    );
}

#[tokio::test]
async fn progress_request_is_answered_on_a_stream_with_many_watchers() {
    let (_s, mut c) = start().await;
    let mut w = c.watch("a", None).await.unwrap();
    expect_created(&mut w).await;
    w.watch("b", None).await.unwrap();
    expect_created(&mut w).await;
    let rev = put(&mut c, "c", "1").await;
    w.request_progress().await.unwrap();
    let r = next_resp(&mut w).await;
    assert_eq!(r.watch_id(), -1);
    assert_eq!(hrev(r.header()), rev);
    assert!(r.events().is_empty());
    // Exactly one progress response for one request.
    expect_silence_strict(&mut w, Duration::from_millis(300)).await;
}

async fn expect_silence_strict(w: &mut etcd_client::WatchStream, d: Duration) {
    if let Ok(m) = tokio::time::timeout(d, w.message()).await {
        panic!("expected no watch message, got {m:?}");
    }
}

#[tokio::test]
async fn client_chosen_watch_ids() {
    let (_s, mut c) = start().await;
    let mut w = c
        .watch("k", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    assert_eq!(expect_created(&mut w).await, 7);
    w.watch("k", Some(WatchOptions::new().with_watch_id(100)))
        .await
        .unwrap();
    assert_eq!(expect_created(&mut w).await, 100);
    let rev = put(&mut c, "k", "v").await;
    let mut ids = vec![];
    while ids.len() < 2 {
        let r = next_resp(&mut w).await;
        assert_eq!(r.events().len(), 1);
        assert_eq!(ev(&r.events()[0]), put_ev("k", "v", rev));
        ids.push(r.watch_id());
    }
    ids.sort();
    assert_eq!(ids, [7, 100]);

    // Reusing an id in use on the stream: created and canceled at once.
    w.watch("other", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    let r = next_resp(&mut w).await;
    assert!(r.created() && r.canceled(), "duplicate watch id: {r:?}");
    assert!(!r.cancel_reason().is_empty());

    // An auto-assigned id never collides with client-chosen ones.
    w.watch("k2", None).await.unwrap();
    let auto = expect_created(&mut w).await;
    assert!(auto != 7 && auto != 100);

    // After cancel, the id can be reused.
    w.cancel(7).await.unwrap();
    let r = next_resp(&mut w).await;
    assert!(r.canceled() && r.watch_id() == 7);
    w.watch("z", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    assert_eq!(expect_created(&mut w).await, 7);
}

#[tokio::test]
async fn watch_from_compacted_revision_is_canceled() {
    let (_s, mut c) = start().await;
    let r1 = put(&mut c, "k", "1").await;
    put(&mut c, "k", "2").await;
    let r3 = put(&mut c, "k", "3").await;
    c.compact(r3, None).await.unwrap();
    let mut w = c
        .watch("k", Some(WatchOptions::new().with_start_revision(r1)))
        .await
        .unwrap();
    // etcd answers with a created response, then a cancel carrying compact_revision.
    let mut canceled = None;
    for _ in 0..2 {
        let r = next_resp(&mut w).await;
        assert!(
            r.events().is_empty(),
            "no events from below the compaction: {r:?}"
        );
        if r.canceled() {
            canceled = Some(r);
            break;
        }
        assert!(r.created());
    }
    let r = canceled.expect("watch not canceled");
    assert_eq!(r.compact_revision(), r3);
    // The compaction revision itself is still watchable.
    let mut w = c
        .watch("k", Some(WatchOptions::new().with_start_revision(r3)))
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    let got: Vec<_> = next_events(&mut w, id, 1).await.iter().map(ev).collect();
    assert_eq!(got, [put_ev("k", "3", r3)]);
}

#[tokio::test]
async fn watch_with_fragment_flag_delivers_everything() {
    let (_s, mut c) = start().await;
    let big = "x".repeat(100 * 1024);
    for i in 0..20 {
        put(&mut c, &format!("fr/{i:02}"), &big).await;
    }
    let mut w = c
        .watch(
            "fr/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_prev_key()
                    .with_fragment(),
            ),
        )
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    // One revision whose events (with prev_kv) are 2 MB, over the 1.5 MiB request limit:
    // with `fragment` the server may split it over several responses; all events arrive.
    let rev = hrev(
        c.delete("fr/", Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .unwrap()
            .header(),
    );
    let evs = next_events(&mut w, id, 20).await;
    assert!(evs.iter().all(|e| e.event_type() == EventType::Delete));
    assert!(evs.iter().all(|e| e.kv().unwrap().mod_revision() == rev));
    assert!(evs
        .iter()
        .all(|e| e.prev_kv().unwrap().value().len() == big.len()));
}

#[tokio::test]
async fn watch_with_require_leader_metadata() {
    let (s, mut c) = start().await;
    // kube-apiserver sends `hasleader=true`; a single node with a leader accepts it.
    let mut lc = etcd_client::Client::connect(
        [s.endpoint.as_str()],
        Some(ConnectOptions::new().with_require_leader(true)),
    )
    .await
    .unwrap();
    // A write first: the node has a leader (startup readiness is tested in serving.rs).
    put(&mut c, "warm-up", "1").await;
    let mut w = lc.watch("k", None).await.unwrap();
    let id = expect_created(&mut w).await;
    let rev = put(&mut c, "k", "v").await;
    let got: Vec<_> = next_events(&mut w, id, 1).await.iter().map(ev).collect();
    assert_eq!(got, [put_ev("k", "v", rev)]);
}

#[tokio::test]
async fn concurrent_writers_events_in_revision_order() {
    let (s, mut c) = start().await;
    let mut w = c
        .watch("cw/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    let mut tasks = vec![];
    for t in 0..4 {
        let mut wc = s.client().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                wc.put(format!("cw/{t}/{i}"), "v", None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let evs = next_events(&mut w, id, 200).await;
    let revs: Vec<i64> = evs.iter().map(|e| e.kv().unwrap().mod_revision()).collect();
    assert!(
        revs.windows(2).all(|p| p[1] == p[0] + 1),
        "events must be gap-free and in revision order"
    );
}

#[tokio::test]
async fn periodic_progress_notify() {
    // raftkine: --watch-progress-notify-interval; etcd 3.4: the experimental flag.
    let server = AnyServer::start(
        &["--watch-progress-notify-interval", "1s"],
        &[
            "--experimental-watch-progress-notify-interval".to_string(),
            "1s".to_string(),
        ],
        "http",
    );
    let mut c = server.client().await;
    let mut w = c
        .watch(
            "pn/",
            Some(WatchOptions::new().with_prefix().with_progress_notify()),
        )
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    let mut quiet = c
        .watch("pn/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    expect_created(&mut quiet).await;
    let rev = put(&mut c, "elsewhere", "1").await;
    // Without events, a watcher that asked for progress_notify gets an empty response with
    // its own watch id and the current revision within a couple of intervals.
    let r = tokio::time::timeout(Duration::from_secs(6), w.message())
        .await
        .expect("no progress notification within 6 s")
        .unwrap()
        .unwrap();
    assert!(r.events().is_empty(), "{r:?}");
    assert!(!r.canceled() && !r.created());
    assert_eq!(
        r.watch_id(),
        id,
        "periodic notifications carry the watcher's id"
    );
    assert_eq!(hrev(r.header()), rev);
    // A watcher without progress_notify gets nothing.
    expect_silence_strict(&mut quiet, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_stream_that_fell_behind_gets_its_revisions_grouped_complete_and_in_order() {
    if skip_on_etcd("a_stream_that_fell_behind_gets_its_revisions_grouped_complete_and_in_order") {
        return;
    }
    let (s, mut c) = start().await;
    let mut w = c
        .watch("behind/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    // Nothing is read from the stream while the puts are made: 600 values of 32 KiB (19 MiB)
    // are more than the server's queue, the HTTP/2 windows and the socket buffers hold, so the
    // stream falls behind the applied revisions.
    let value = vec![b'v'; 32 * 1024];
    let mut tasks = vec![];
    for t in 0..4 {
        let mut wc = s.client().await;
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = vec![];
            for i in 0..150 {
                let r = wc
                    .put(format!("behind/{t}/{i}"), value.clone(), None)
                    .await
                    .unwrap();
                revs.push(hrev(r.header()));
            }
            revs
        }));
    }
    let mut put_revs = vec![];
    for t in tasks {
        put_revs.extend(t.await.unwrap());
    }
    put_revs.sort();

    let mut revs = vec![];
    let mut responses = 0;
    while revs.len() < put_revs.len() {
        let r = next_resp(&mut w).await;
        assert!(!r.canceled(), "canceled: {r:?}");
        if r.events().is_empty() {
            continue;
        }
        assert_eq!(r.watch_id(), id);
        responses += 1;
        let last = r
            .events()
            .last()
            .and_then(|e| e.kv())
            .unwrap()
            .mod_revision();
        assert!(
            hrev(r.header()) >= last,
            "a response's header revision {} is below its last event's {last}",
            hrev(r.header())
        );
        revs.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
    }
    assert_eq!(revs, put_revs, "every put once, in revision order");
    assert!(
        responses < put_revs.len(),
        "a stream that was behind got one response per revision ({responses})"
    );
    eprintln!(
        "watch: {} revisions arrived in {responses} responses",
        put_revs.len()
    );
    expect_silence(&mut w, Duration::from_millis(200)).await;
}
