//! Member roles and what survives leader changes, with real processes, really killed (kill -9):
//! a dead voter replaced by a caught-up standby (`--voter-grace`) and coming back as a standby;
//! `raftkine remove-node` of the leader and `raftkine leave`; etcd's MemberPromote and
//! MemberRemove; a lease kept alive through a follower across the leader's death; a watch on a
//! follower that sees every write exactly once, in order, while the leader is killed twice.
//!
//! Every test starts its own cluster (`support::cluster`) on free loopback ports, so they run in
//! parallel. Measured times are printed with a `cluster_roles:` prefix; run with `--nocapture`
//! to see them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};
use tonic::Code;

use crate::cluster_ha::{
    code_and_message, local_keys, options, restart, serializable, start, wait_new_leader,
    wait_writable, WriteMode, Writers,
};
use crate::support::cluster::{Cluster, ClusterOptions};
use crate::support::raftkine_bin;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Request timeout of the clients holding a stream (watch, keep-alive) for a whole test.
const STREAM_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `raftkine ARGS...` to completion (at most 20 s); its stdout, or an error with its
/// output.
async fn raftkine_tool(args: &[&str]) -> Result<String, String> {
    let run = tokio::process::Command::new(raftkine_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(20), run).await {
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into()),
        Ok(Ok(out)) => Err(format!(
            "raftkine {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Ok(Err(e)) => Err(format!("raftkine {args:?}: {e}")),
        Err(_) => Err(format!("raftkine {args:?}: still running after 20 s")),
    }
}

/// The `HOST:PORT` form of node i's client endpoint (what `--endpoint` takes).
fn host_port(cluster: &Cluster, i: usize) -> String {
    format!("127.0.0.1:{}", cluster.node(i).client_port)
}

/// `raftkine status --format json` on node i, without blocking the runtime's other tasks.
fn status_of(cluster: &Cluster, i: usize) -> Result<serde_json::Value, String> {
    tokio::task::block_in_place(|| cluster.cluster_status(i))
}

/// Waits until `raftkine status` on one of `on` shows roles (voter names, standby names, both
/// sorted) that `want` accepts; returns that status. Panics after `timeout` with the last one.
async fn wait_roles(
    cluster: &mut Cluster,
    on: &[usize],
    want: impl Fn(&[String], &[String]) -> bool,
    timeout: Duration,
    what: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        for &i in on {
            match status_of(cluster, i) {
                Ok(status) => {
                    let (voters, standbys) = Cluster::roles(&status);
                    if want(&voters, &standbys) {
                        return status;
                    }
                    last = format!("{}: voters {voters:?}, standbys {standbys:?}", i + 1);
                }
                Err(e) => last = e,
            }
        }
        if Instant::now() >= deadline {
            panic!(
                "not {what} within {timeout:?}; last status (node n{last}\n{}",
                cluster.log_tails(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The members as MemberList on node i shows them: (id, name, learner), sorted by name.
async fn member_list(cluster: &Cluster, i: usize) -> Result<Vec<(u64, String, bool)>, String> {
    let mut c = cluster.client(i).await;
    let r = c
        .member_list()
        .await
        .map_err(|e| format!("member list on {}: {e}", cluster.node(i).name))?;
    let mut list: Vec<_> = r
        .members()
        .iter()
        .map(|m| (m.id(), m.name().to_string(), m.is_learner()))
        .collect();
    list.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(list)
}

/// Waits until MemberList on node i satisfies `want`; returns it. Panics after `timeout`.
async fn wait_members(
    cluster: &Cluster,
    i: usize,
    want: impl Fn(&[(u64, String, bool)]) -> bool,
    timeout: Duration,
    what: &str,
) -> Vec<(u64, String, bool)> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match member_list(cluster, i).await {
            Ok(list) if want(&list) => return list,
            Ok(list) => format!("{list:?}"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!(
                "{}: not {what} within {timeout:?}; last member list: {last}\n{}",
                cluster.node(i).name,
                cluster.log_tails(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The raft term node i reports.
async fn term_of(cluster: &Cluster, i: usize) -> u64 {
    cluster
        .node(i)
        .status(Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("status: {e}"))
        .raft_term()
}

/// Sends SIGSTOP or SIGCONT to node i's process.
fn signal(cluster: &Cluster, i: usize, sig: &str) {
    let pid = cluster.node(i).pid().expect("node running");
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

// ---------------------------------------------------------------------------------------------
// 1. A dead voter replaced by the standby.

/// Four nodes, three voters: a voter killed (not the leader) is replaced by the standby once
/// the voter grace has passed (the standby promoted, the dead voter demoted to standby);
/// writes go on; the dead voter restarted stays a standby and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_roles_dead_voter_is_replaced_by_the_standby_and_returns_as_standby() {
    let mut cluster = start(ClusterOptions {
        extra_args: vec!["--voter-grace".into(), "3s".into()],
        ..options(4, Duration::from_secs(3))
    });
    let all: Vec<usize> = (0..4).collect();
    let status = wait_roles(
        &mut cluster,
        &all,
        |v, s| v.len() == 3 && s.len() == 1,
        Duration::from_secs(10),
        "3 voters and 1 standby",
    )
    .await;
    let (voters, standbys) = Cluster::roles(&status);
    let standby = standbys[0].clone();
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let victim = (0..4)
        .find(|&i| i != leader && voters.contains(&cluster.node(i).name))
        .expect("a voter that does not lead");
    let victim_name = cluster.node(victim).name.clone();
    let mut c = cluster.client(leader).await;
    c.put("roles/before", "1", None).await.expect("put");

    cluster.kill(victim);
    let killed_at = Instant::now();
    let survivors: Vec<usize> = (0..4).filter(|&i| i != victim).collect();
    let status = wait_roles(
        &mut cluster,
        &survivors,
        |v, s| v.contains(&standby) && !v.contains(&victim_name) && s == [victim_name.clone()],
        Duration::from_secs(15),
        &format!("{standby} a voter and the dead {victim_name} a standby"),
    )
    .await;
    eprintln!(
        "cluster_roles: voter {victim_name} killed: {standby} promoted and {victim_name} \
         demoted {:.1?} later (grace 3 s)",
        killed_at.elapsed()
    );
    assert_eq!(
        Cluster::roles(&status).0.len(),
        3,
        "back to 3 voters: {status}"
    );
    assert_eq!(status["high_availability"], true, "status: {status}");

    // Writes work on every survivor, the promoted standby included.
    for &i in &survivors {
        wait_writable(
            &cluster,
            i,
            &format!("roles/after-{i}"),
            Duration::from_secs(2),
            Duration::from_secs(10),
        )
        .await;
    }

    // The dead voter comes back: it catches up (same HashKV) and stays a standby.
    restart(&mut cluster, victim);
    let t = Instant::now();
    let rev = cluster.wait_converged(Duration::from_secs(20)).await;
    eprintln!(
        "cluster_roles: {victim_name} restarted and converged at revision {rev} in {:.1?}",
        t.elapsed()
    );
    let status = wait_roles(
        &mut cluster,
        &[victim],
        |v, s| v.len() == 3 && !v.contains(&victim_name) && s == [victim_name.clone()],
        Duration::from_secs(10),
        &format!("{victim_name} a standby (seen by itself)"),
    )
    .await;
    assert!(
        Cluster::roles(&status).0.contains(&standby),
        "status: {status}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = status_of(&cluster, leader).expect("status");
    assert_eq!(
        Cluster::roles(&status).1,
        std::slice::from_ref(&victim_name),
        "{victim_name} stays a standby: {status}"
    );
    let mut c = cluster.client(victim).await;
    let keys = local_keys(&mut c, "roles/").await;
    assert_eq!(
        keys.len(),
        1 + survivors.len(),
        "{victim_name} holds {keys:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. remove-node and leave.

/// `raftkine remove-node NAME` of the leader: another voter leads, the member is gone, writes
/// work; then `raftkine leave` against a follower removes that follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_roles_remove_node_of_the_leader_and_leave_of_a_follower() {
    let mut cluster = start(options(3, Duration::from_secs(3)));
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let term = term_of(&cluster, leader).await;
    let leader_name = cluster.node(leader).name.clone();
    let asked = (leader + 1) % 3;
    let t = Instant::now();
    let out = raftkine_tool(&[
        "remove-node",
        &leader_name,
        "--endpoint",
        &host_port(&cluster, asked),
    ])
    .await
    .unwrap_or_else(|e| panic!("remove-node {leader_name}: {e}\n{}", cluster.log_tails(20)));
    eprintln!(
        "cluster_roles: remove-node {leader_name} (the leader) took {:.1?}: {}",
        t.elapsed(),
        out.trim().replace('\n', " | ")
    );
    let new = wait_new_leader(&mut cluster, leader, term, Duration::from_secs(10)).await;
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &rest {
        let list = wait_members(
            &cluster,
            i,
            |l| l.len() == 2 && l.iter().all(|m| m.1 != leader_name && !m.2),
            Duration::from_secs(5),
            "two voters without the removed leader",
        )
        .await;
        eprintln!(
            "cluster_roles: members on {}: {list:?}",
            cluster.node(i).name
        );
        wait_writable(
            &cluster,
            i,
            &format!("rm/after-{i}"),
            Duration::from_secs(2),
            Duration::from_secs(10),
        )
        .await;
    }
    let status = status_of(&cluster, new).expect("status");
    assert_eq!(
        Cluster::roles(&status),
        (
            rest.iter().map(|&i| cluster.node(i).name.clone()).collect(),
            vec![]
        ),
        "status: {status}"
    );

    // `leave` against the follower that remains.
    let follower = *rest.iter().find(|&&i| i != new).unwrap();
    let follower_name = cluster.node(follower).name.clone();
    let out = raftkine_tool(&["leave", "--endpoint", &host_port(&cluster, follower)])
        .await
        .unwrap_or_else(|e| panic!("leave {follower_name}: {e}\n{}", cluster.log_tails(20)));
    eprintln!(
        "cluster_roles: leave on {follower_name}: {}",
        out.trim().replace('\n', " | ")
    );
    let new_name = cluster.node(new).name.clone();
    wait_members(
        &cluster,
        new,
        |l| l.len() == 1 && l[0].1 == new_name && !l[0].2,
        Duration::from_secs(5),
        "only itself",
    )
    .await;
    let leader_now = cluster.wait_for_leader(Duration::from_secs(10)).await;
    assert_eq!(leader_now, new, "the last member leads");
    wait_writable(
        &cluster,
        new,
        "rm/alone",
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .await;
    let mut c = cluster.client(new).await;
    let r = c
        .get(
            "rm/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("read");
    assert_eq!(r.count(), 3, "rm/after-*, rm/alone");
}

// ---------------------------------------------------------------------------------------------
// 3. etcd's Cluster API: MemberPromote, MemberRemove, MemberAdd.

/// With `--voters 1` the second node stays a learner; etcd's MemberPromote makes it a voter,
/// MemberRemove by id removes it, and MemberAdd records a learner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_roles_member_promote_and_remove_through_the_etcd_api() {
    let cluster = start(ClusterOptions {
        voters: 1,
        ..options(2, Duration::from_secs(5))
    });
    let list = wait_members(
        &cluster,
        0,
        |l| l.len() == 2 && !l[0].2 && l[1].2,
        Duration::from_secs(10),
        "n1 a voter and n2 a learner",
    )
    .await;
    let learner = list[1].0;
    let mut c = cluster.client(0).await;

    // MemberAdd records a learner for a node still to start (it would take the place with
    // --initial-cluster-state existing); the same peer URL twice is refused like etcd does;
    // MemberRemove takes the record away again.
    let added = c
        .member_add(["https://127.0.0.1:1"], None)
        .await
        .expect("MemberAdd");
    let added_id = added.member().map(|m| m.id()).expect("the added member");
    assert!(added
        .member_list()
        .iter()
        .any(|m| m.id() == added_id && m.is_learner()));
    let e = c
        .member_add(["https://127.0.0.1:1"], None)
        .await
        .expect_err("a taken peer URL");
    let (code, message) = code_and_message(&e);
    assert_eq!(code, Code::FailedPrecondition, "{e}");
    assert!(message.contains("Peer URLs already exists"), "{message:?}");
    c.member_remove(added_id)
        .await
        .expect("MemberRemove of the added member");

    // Promote (retrying while the learner catches up).
    let deadline = Instant::now() + Duration::from_secs(10);
    let promoted = loop {
        match c.member_promote(learner).await {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => {
                eprintln!("cluster_roles: member_promote: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("member_promote({learner:x}): {e}"),
        }
    };
    assert!(
        promoted.members().iter().all(|m| !m.is_learner()),
        "MemberPromote's answer: {:?}",
        promoted.members()
    );
    for i in 0..2 {
        wait_members(
            &cluster,
            i,
            |l| l.len() == 2 && l.iter().all(|m| !m.2),
            Duration::from_secs(5),
            "two voters",
        )
        .await;
    }
    let status = status_of(&cluster, 1).expect("status");
    assert_eq!(Cluster::roles(&status).0, ["n1", "n2"], "status: {status}");
    // A second promote of a voter is refused.
    let e = c
        .member_promote(learner)
        .await
        .expect_err("promoting a voter");
    assert_eq!(code_and_message(&e).0, Code::InvalidArgument, "{e}");
    // Writes now need both; they work through either.
    for i in 0..2 {
        let mut ci = cluster.client(i).await;
        ci.put(format!("promote/{i}"), "x", None)
            .await
            .unwrap_or_else(|e| panic!("put on n{}: {e}", i + 1));
    }

    // MemberRemove by id.
    let removed = c.member_remove(learner).await.expect("member_remove");
    assert!(
        removed.members().iter().all(|m| m.id() != learner),
        "MemberRemove's answer: {:?}",
        removed.members()
    );
    let list = wait_members(
        &cluster,
        0,
        |l| l.len() == 1 && l[0].1 == "n1",
        Duration::from_secs(5),
        "n1 alone",
    )
    .await;
    assert!(!list[0].2, "n1 is a voter");
    // And it stays gone (the removed process still runs: it must not come back).
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let list = member_list(&cluster, 0).await.expect("member list");
        assert!(
            list.len() == 1 && list[0].1 == "n1",
            "the removed n2 is back in the member list: {list:?}"
        );
    }
    wait_writable(
        &cluster,
        0,
        "promote/alone",
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .await;
    let e = c
        .member_remove(learner)
        .await
        .expect_err("removing it again");
    assert_eq!(code_and_message(&e).0, Code::NotFound, "{e}");
}

// ---------------------------------------------------------------------------------------------
// 4. Leases across a leader change.

/// What the keep-alive task saw.
#[derive(Debug, Default)]
struct KeepAliveLog {
    /// Answered keep-alives (TTL > 0).
    ok: usize,
    /// Failures (errors, timeouts, TTL 0), with when.
    errors: Vec<String>,
    /// Longest time between two answered keep-alives.
    longest_gap: Duration,
    /// When the last keep-alive was answered.
    last_ok: Option<Instant>,
}

/// A lease granted (TTL 6 s) and kept alive through a follower, its key attached: the leader is
/// kill -9ed, and 10 s after a new leader is elected the key is still there; once the
/// keep-alives stop, the key is deleted within TTL + a few seconds, and a watch on another
/// surviving member sees the DELETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_roles_lease_kept_alive_through_a_follower_survives_leader_death() {
    const TTL: i64 = 6;
    let mut cluster = start(options(3, Duration::from_secs(3)));
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let term = term_of(&cluster, leader).await;
    let follower = (leader + 1) % 3;
    let watcher = (leader + 2) % 3;

    let mut c = cluster.node(follower).client(STREAM_CLIENT_TIMEOUT).await;
    let lease = c.lease_grant(TTL, None).await.expect("grant").id();
    let put = c
        .put("lease/key", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put with the lease");
    let rev = put.header().unwrap().revision();

    // A watch on the other follower, from after the put.
    let mut wc = cluster.node(watcher).client(STREAM_CLIENT_TIMEOUT).await;
    let mut watch = wc
        .watch(
            "lease/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1),
            ),
        )
        .await
        .expect("watch");
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let watch_task = tokio::spawn(async move {
        loop {
            match watch.message().await {
                Ok(Some(r)) => {
                    for e in r.events() {
                        let key = e.kv().map(|kv| kv.key_str().unwrap_or("?").to_string());
                        let _ = events_tx.send((Instant::now(), e.event_type(), key));
                    }
                    if r.canceled() {
                        return format!("watch canceled: {r:?}");
                    }
                }
                Ok(None) => return "watch stream ended".to_string(),
                Err(e) => return format!("watch stream error: {e}"),
            }
        }
    });

    // Keep-alives through the follower, once a second; the stream is reopened after an error,
    // as etcd's clients do.
    let stop = Arc::new(AtomicBool::new(false));
    let keep_alive = {
        let stop = stop.clone();
        let mut c = c.clone();
        tokio::spawn(async move {
            let mut log = KeepAliveLog::default();
            let mut prev = Instant::now();
            let mut stream = None;
            while !stop.load(Ordering::SeqCst) {
                if stream.is_none() {
                    match c.lease_keep_alive(lease).await {
                        Ok(s) => stream = Some(s),
                        Err(e) => log.errors.push(format!("{:?}: open: {e}", prev.elapsed())),
                    }
                }
                if let Some((keeper, answers)) = stream.as_mut() {
                    let once = async {
                        keeper.keep_alive().await?;
                        answers.message().await
                    };
                    match tokio::time::timeout(Duration::from_secs(2), once).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => {
                            let now = Instant::now();
                            log.longest_gap = log.longest_gap.max(now - prev);
                            prev = now;
                            log.ok += 1;
                            log.last_ok = Some(now);
                        }
                        Ok(Ok(Some(r))) => {
                            log.errors
                                .push(format!("TTL {} answered: lease gone", r.ttl()));
                        }
                        Ok(Ok(None)) => {
                            log.errors.push("keep-alive stream ended".into());
                            stream = None;
                        }
                        Ok(Err(e)) => {
                            log.errors.push(format!("keep-alive: {e}"));
                            stream = None;
                        }
                        Err(_) => {
                            log.errors.push("keep-alive: no answer within 2 s".into());
                            stream = None;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            log
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let killed_at = Instant::now();
    cluster.kill(leader);
    let new = wait_new_leader(&mut cluster, leader, term, Duration::from_secs(10)).await;
    let elected = killed_at.elapsed();
    eprintln!(
        "cluster_roles: leader {} killed; {} leads after {elected:.2?}",
        cluster.node(leader).name,
        cluster.node(new).name
    );
    tokio::time::sleep(Duration::from_secs(10)).await;

    // Still there, on both survivors (linearizable reads); the lease lives, TimeToLive through
    // the follower says so.
    for i in [follower, watcher] {
        let mut ci = cluster.client(i).await;
        let r = ci.get("lease/key", None).await.expect("linearizable read");
        assert_eq!(
            r.kvs().len(),
            1,
            "the key of a lease kept alive is gone on {} ({:.1?} after the leader's death)",
            cluster.node(i).name,
            killed_at.elapsed()
        );
    }
    let ttl = c
        .lease_time_to_live(lease, None)
        .await
        .expect("TimeToLive through the follower");
    assert!(
        (1..=TTL).contains(&ttl.ttl()),
        "TimeToLive of a lease kept alive: {}",
        ttl.ttl()
    );
    assert!(
        events.try_recv().is_err(),
        "the watch saw an event while the lease was kept alive"
    );

    // Stop the keep-alives: the key goes within TTL + a few seconds.
    stop.store(true, Ordering::SeqCst);
    let log = keep_alive.await.expect("keep-alive task");
    let stopped_at = Instant::now();
    eprintln!(
        "cluster_roles: keep-alives through the follower: {} answered, longest gap {:.2?}, \
         errors: {:?}",
        log.ok, log.longest_gap, log.errors
    );
    assert!(
        log.longest_gap < Duration::from_secs(TTL as u64),
        "keep-alives went unanswered for {:?}",
        log.longest_gap
    );
    let last_ok = log.last_ok.expect("some keep-alive answered");
    let limit = Duration::from_secs(TTL as u64 + 4);
    let (at, kind, key) = match tokio::time::timeout(limit, events.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("{}", watch_task.await.unwrap()),
        Err(_) => panic!(
            "no DELETE on {} within {limit:?} of the last keep-alive\n{}",
            cluster.node(watcher).name,
            cluster.log_tails(20)
        ),
    };
    assert_eq!(
        (kind, key.as_deref()),
        (EventType::Delete, Some("lease/key")),
        "the event after the keep-alives stopped"
    );
    eprintln!(
        "cluster_roles: keep-alives stopped: DELETE seen {:.1?} after the last answered one \
         (TTL {TTL} s)",
        at - last_ok
    );
    assert!(
        at - last_ok >= Duration::from_secs(TTL as u64 - 1),
        "deleted {:?} after the last keep-alive, before the TTL",
        at - last_ok
    );
    assert!(at - stopped_at < limit);
    let mut cw = cluster.client(watcher).await;
    let r = cw.get("lease/key", None).await.expect("read");
    assert!(r.kvs().is_empty(), "deleted: {:?}", r.kvs());
    let ttl = c.lease_time_to_live(lease, None).await.expect("TimeToLive");
    assert_eq!(ttl.ttl(), -1, "an expired lease is gone");
    watch_task.abort();
}

// ---------------------------------------------------------------------------------------------
// 5. A watch across leader changes.

/// A PUT event as the watch delivered it.
#[derive(Clone, Debug)]
struct Seen {
    key: String,
    value: String,
    mod_revision: i64,
    kind: EventType,
}

/// A prefix watch on a follower while writers put through every member and the leader is
/// kill -9ed and restarted twice: every acknowledged key's PUT arrives exactly once, in
/// revision order, and the revisions seen are exactly those of the keys stored under the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_roles_watch_on_a_follower_sees_every_write_once_across_leader_kills() {
    let mut cluster = start(options(3, Duration::from_secs(3)));
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let follower = (leader + 1) % 3;
    let follower_name = cluster.node(follower).name.clone();

    let mut wc = cluster.node(follower).client(STREAM_CLIENT_TIMEOUT).await;
    let rev = wc
        .get("wc/", Some(serializable().with_count_only()))
        .await
        .expect("read")
        .header()
        .unwrap()
        .revision();
    let mut watch = wc
        .watch(
            "wc/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1),
            ),
        )
        .await
        .expect("watch");
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let watch_task = tokio::spawn(async move {
        loop {
            match watch.message().await {
                Ok(Some(r)) => {
                    if r.canceled() {
                        return format!("watch canceled: {r:?}");
                    }
                    for e in r.events() {
                        let kv = e.kv().expect("event kv");
                        let _ = events_tx.send(Seen {
                            key: kv.key_str().unwrap_or("?").to_string(),
                            value: kv.value_str().unwrap_or("?").to_string(),
                            mod_revision: kv.mod_revision(),
                            kind: e.event_type(),
                        });
                    }
                }
                Ok(None) => return "watch stream ended".to_string(),
                Err(e) => return format!("watch stream error: {e}"),
            }
        }
    });

    let clients = cluster.clients().await;
    let writers = Writers::start("wc", &clients, 3, WriteMode::Once(Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    for round in 0..2 {
        let mut leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
        if leader == follower {
            // Keep the watched member alive: freeze it until another member leads.
            let term = term_of(&cluster, leader).await;
            signal(&cluster, follower, "STOP");
            leader = wait_new_leader(&mut cluster, follower, term, Duration::from_secs(10)).await;
            signal(&cluster, follower, "CONT");
            eprintln!("cluster_roles: round {round}: {follower_name} led; frozen until it did not");
        }
        let term = term_of(&cluster, leader).await;
        cluster.kill(leader);
        let t = Instant::now();
        let new = wait_new_leader(&mut cluster, leader, term, Duration::from_secs(10)).await;
        eprintln!(
            "cluster_roles: round {round}: leader {} killed, {} leads after {:.2?}",
            cluster.node(leader).name,
            cluster.node(new).name,
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        restart(&mut cluster, leader);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let logs = writers.stop().await;
    cluster.wait_converged(Duration::from_secs(20)).await;

    // What the follower stores under the prefix (each key written once).
    let mut c = cluster.client(follower).await;
    let stored = local_keys(&mut c, "wc/").await;
    let last = stored.values().map(|k| k.mod_revision).max().unwrap_or(0);
    let mut seen: Vec<Seen> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.last().map_or(0, |s| s.mod_revision) < last {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(s)) => seen.push(s),
            Ok(None) => panic!("{}", watch_task.await.unwrap()),
            Err(_) => break,
        }
    }
    // Anything more (a duplicate) would arrive right behind.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(s) = events.try_recv() {
        seen.push(s);
    }
    watch_task.abort();

    let acked: HashMap<&str, &str> = logs
        .iter()
        .flat_map(|l| l.acked.iter().map(|(k, v, _)| (k.as_str(), v.as_str())))
        .collect();
    let unknown: HashMap<&str, &str> = logs
        .iter()
        .flat_map(|l| l.failed.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
    eprintln!(
        "cluster_roles: {} writes acknowledged, {} with unknown outcome; the watch on \
         {follower_name} delivered {} events up to revision {}",
        acked.len(),
        unknown.len(),
        seen.len(),
        seen.last().map_or(0, |s| s.mod_revision)
    );
    assert!(acked.len() > 30, "too few writes to mean anything");

    assert!(
        seen.iter().all(|s| s.kind == EventType::Put),
        "only PUTs were made: {:?}",
        seen.iter()
            .filter(|s| s.kind != EventType::Put)
            .collect::<Vec<_>>()
    );
    let disorder: Vec<_> = seen
        .windows(2)
        .filter(|w| w[1].mod_revision <= w[0].mod_revision)
        .map(|w| (w[0].mod_revision, w[1].mod_revision, w[1].key.clone()))
        .collect();
    assert!(
        disorder.is_empty(),
        "events out of revision order (or repeated): {:?}",
        &disorder[..disorder.len().min(10)]
    );
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &seen {
        *count.entry(s.key.as_str()).or_default() += 1;
        let written = acked
            .get(s.key.as_str())
            .or_else(|| unknown.get(s.key.as_str()));
        assert_eq!(
            written,
            Some(&s.value.as_str()),
            "event {s:?}: never written"
        );
    }
    let twice: Vec<_> = count.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "keys delivered more than once: {twice:?}");
    let missed: Vec<&&str> = acked.keys().filter(|k| !count.contains_key(**k)).collect();
    assert!(
        missed.is_empty(),
        "{} acknowledged writes (of {}) never reached the watch, e.g. {:?}",
        missed.len(),
        acked.len(),
        &missed[..missed.len().min(10)]
    );
    // No gaps: the revisions delivered are exactly those of the keys stored under the prefix.
    let delivered: BTreeSet<i64> = seen.iter().map(|s| s.mod_revision).collect();
    let expected: BTreeSet<i64> = stored.values().map(|k| k.mod_revision).collect();
    let gaps: Vec<&i64> = expected.difference(&delivered).collect();
    let extra: Vec<&i64> = delivered.difference(&expected).collect();
    assert!(
        gaps.is_empty() && extra.is_empty(),
        "revisions of watched keys not delivered: {:?}; delivered but not stored: {:?}",
        &gaps[..gaps.len().min(10)],
        &extra[..extra.len().min(10)]
    );
    for s in &seen {
        let k = &stored[&s.key];
        assert_eq!(
            (&k.value, k.mod_revision),
            (&s.value, s.mod_revision),
            "{s:?}"
        );
    }
}

/// A keep-alive stream through a follower whose leader stops answering (frozen with SIGSTOP,
/// as a leader behind a black-holing partition would be) while a keep-alive is being forwarded:
/// the forward gives up within the request timeout (the stream ends with "no leader", as etcd's
/// does), and keep-alives on a reopened stream (what etcd clients do) are answered once another
/// member leads. (A forward without a deadline used to leave the stream stuck for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_roles_keep_alive_stream_through_a_follower_survives_a_frozen_leader() {
    let mut cluster = start(options(3, Duration::from_secs(3)));
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let term = term_of(&cluster, leader).await;
    let follower = (leader + 1) % 3;
    let mut c = cluster.node(follower).client(STREAM_CLIENT_TIMEOUT).await;
    let lease = c.lease_grant(30, None).await.expect("grant").id();
    let (mut keeper, mut answers) = c.lease_keep_alive(lease).await.expect("keep-alive");
    keeper.keep_alive().await.expect("send");
    let first = answers.message().await.expect("answer").expect("stream");
    assert_eq!(first.ttl(), 30);

    signal(&cluster, leader, "STOP");
    // Forwarded to the frozen leader: no answer expected while it is frozen.
    keeper.keep_alive().await.expect("send");
    let t = Instant::now();
    let early = tokio::time::timeout(Duration::from_secs(1), answers.message()).await;
    let new = wait_new_leader(&mut cluster, leader, term, Duration::from_secs(10)).await;
    eprintln!(
        "cluster_roles: leader frozen; {} leads after {:.2?} (answer while frozen: {})",
        cluster.node(new).name,
        t.elapsed(),
        early.is_ok()
    );
    let mut answered = early.is_ok_and(|r| r.is_ok_and(|a| a.is_some_and(|a| a.ttl() > 0)));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !answered && Instant::now() < deadline {
        let reply = match keeper.keep_alive().await {
            Ok(()) => tokio::time::timeout(Duration::from_secs(2), answers.message()).await,
            Err(_) => Ok(Ok(None)),
        };
        match reply {
            Ok(Ok(Some(a))) => answered = a.ttl() > 0,
            Err(_) => {} // no answer yet: keep sending, as clients do
            Ok(Ok(None)) | Ok(Err(_)) => {
                // The stream ended: reopen it, as etcd clients do.
                tokio::time::sleep(Duration::from_millis(300)).await;
                if let Ok((k, a)) = c.lease_keep_alive(lease).await {
                    keeper = k;
                    answers = a;
                }
            }
        }
    }
    signal(&cluster, leader, "CONT");
    assert!(
        answered,
        "keep-alives on a stream through {} went unanswered {:.1?} after the leader froze, \
         though {} leads",
        cluster.node(follower).name,
        t.elapsed(),
        cluster.node(new).name
    );
}

/// Leases granted through followers, each kept alive and asked for its time-to-live right after
/// the grant answered: the leader (where keep-alives and TTLs are answered) may not have applied
/// the grant yet, and must catch up rather than call the lease gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_roles_lease_granted_on_a_follower_is_found_by_the_leader_at_once() {
    const LEASES: usize = 400;
    const PER_FOLLOWER: usize = 16;
    let mut cluster = start(options(3, Duration::from_secs(10)));
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    // Bulk writes keep the leader's apply busy, widening the window between commit and apply.
    let busy = Arc::new(AtomicBool::new(true));
    let mut writers = vec![];
    for w in 0..4 {
        let mut c = cluster.node(leader).client(Duration::from_secs(10)).await;
        let busy = busy.clone();
        writers.push(tokio::spawn(async move {
            let value = vec![b'x'; 64 * 1024];
            let mut i = 0u64;
            while busy.load(Ordering::Relaxed) {
                let _ = c
                    .put(format!("busy/{w}/{}", i % 64), value.clone(), None)
                    .await;
                i += 1;
            }
        }));
    }
    let mut tasks = vec![];
    for f in [(leader + 1) % 3, (leader + 2) % 3] {
        for _ in 0..PER_FOLLOWER {
            let mut c = cluster.node(f).client(Duration::from_secs(10)).await;
            tasks.push(tokio::spawn(async move {
                let mut failures = vec![];
                for _ in 0..LEASES / (2 * PER_FOLLOWER) {
                    let id = c.lease_grant(30, None).await.expect("grant").id();
                    // etcd's client reads the first answer when it opens the stream: a lease
                    // the leader does not know fails right there.
                    if let Err(e) = c.lease_keep_alive(id).await {
                        failures.push(format!("lease {id:x}: keep-alive: {e}"));
                    }
                    let left = c.lease_time_to_live(id, None).await.expect("ttl").ttl();
                    if left <= 0 {
                        failures.push(format!("lease {id:x}: TTL {left}"));
                    }
                }
                failures
            }));
        }
    }
    let mut failures = vec![];
    for t in tasks {
        failures.extend(t.await.expect("task"));
    }
    busy.store(false, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    assert!(failures.is_empty(), "leases not found: {failures:?}");
}
