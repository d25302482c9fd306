//! Replication with real processes, really killed: a cluster formed with `add-node`/`join`, the
//! leader killed under a write load, quorum loss and recovery, a partitioned leader, a rolling
//! restart, and a member catching up by snapshot.
//!
//! Every test starts its own cluster (`support::cluster`) on free loopback ports, so they run in
//! parallel. Times that the issue asks to measure (elections, recoveries) are printed with a
//! `cluster_ha:` prefix; run with `--nocapture` to see them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use tonic::Code;

use crate::support::cluster::{Cluster, ClusterOptions};

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Options for a cluster of `n` whose clients give up after `client_timeout`.
pub fn options(n: usize, client_timeout: Duration) -> ClusterOptions {
    ClusterOptions {
        client_timeout,
        ..ClusterOptions::new(n)
    }
}

/// Starts a cluster without blocking the runtime's other tasks.
pub fn start(options: ClusterOptions) -> Cluster {
    let t = Instant::now();
    let n = options.nodes;
    let cluster = tokio::task::block_in_place(|| Cluster::start_with(options));
    eprintln!(
        "cluster_ha: {n}-node cluster formed (all voters) in {:.1?}",
        t.elapsed()
    );
    cluster
}

/// Restarts node i (on its storage dir) without blocking the runtime's other tasks.
pub fn restart(cluster: &mut Cluster, i: usize) {
    tokio::task::block_in_place(|| cluster.restart(i));
}

/// A serializable (local) get.
pub fn serializable() -> GetOptions {
    GetOptions::new().with_serializable()
}

/// Every key under `prefix` on this member (serializable read): key -> (value, version,
/// create revision, mod revision).
pub async fn local_keys(client: &mut Client, prefix: &str) -> BTreeMap<String, KeyState> {
    let r = client
        .get(prefix, Some(serializable().with_prefix()))
        .await
        .expect("serializable range");
    r.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                KeyState {
                    value: String::from_utf8_lossy(kv.value()).into_owned(),
                    version: kv.version(),
                    create_revision: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                },
            )
        })
        .collect()
}

/// A key as one member stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    pub value: String,
    pub version: i64,
    pub create_revision: i64,
    pub mod_revision: i64,
}

/// The gRPC code and message of a failed request (`Unknown` with the error text for errors that
/// are not a gRPC status, e.g. a transport error).
pub fn code_and_message(e: &etcd_client::Error) -> (Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => (Code::Unknown, other.to_string()),
    }
}

/// Puts through `clients[start]`, then the next member, … until one succeeds or `budget` is
/// spent; each attempt gives up after `attempt`. Returns the attempts' errors on failure.
pub async fn put_retrying(
    clients: &mut [Client],
    start: usize,
    key: &str,
    value: &str,
    attempt: Duration,
    budget: Duration,
) -> Result<usize, Vec<String>> {
    let deadline = Instant::now() + budget;
    let mut errors = Vec::new();
    let mut i = start;
    loop {
        let n = i % clients.len();
        match tokio::time::timeout(attempt, clients[n].put(key, value, None)).await {
            Ok(Ok(_)) => return Ok(n),
            Ok(Err(e)) => errors.push(format!("member {n}: {e}")),
            Err(_) => errors.push(format!("member {n}: no answer within {attempt:?}")),
        }
        if Instant::now() >= deadline {
            return Err(errors);
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writer tasks putting distinct keys `PREFIX/W/SEQ` (value `vW-SEQ`), writer w on member
/// `w % members`, recording which writes were acknowledged.
pub struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<WriterLog>>,
}

/// What one writer did.
#[derive(Debug, Default)]
pub struct WriterLog {
    /// Acknowledged writes: key, value, when acknowledged.
    pub acked: Vec<(String, String, Instant)>,
    /// Writes with an error or no answer (unknown outcome): key, value.
    pub failed: Vec<(String, String)>,
    /// Client-visible errors (for the retrying writers: writes no member took within the
    /// budget).
    pub errors: Vec<String>,
}

/// How the writers write.
#[derive(Clone, Copy)]
pub enum WriteMode {
    /// One attempt per key on the writer's own member, giving up after the duration; a failed
    /// key is never written again (so a key written twice would be a duplicate application).
    Once(Duration),
    /// Every key retried on the next members (attempt timeout, total budget) until it succeeds.
    Retrying(Duration, Duration),
}

impl Writers {
    pub fn start(prefix: &str, clients: &[Client], writers: usize, mode: WriteMode) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..writers)
            .map(|w| {
                let stop = stop.clone();
                let mut clients: Vec<Client> = clients.to_vec();
                let prefix = prefix.to_string();
                tokio::spawn(async move {
                    let mut log = WriterLog::default();
                    let mut seq = 0u64;
                    let home = w % clients.len();
                    while !stop.load(Ordering::SeqCst) {
                        let key = format!("{prefix}/{w:02}/{seq:06}");
                        let value = format!("v{w}-{seq}");
                        seq += 1;
                        match mode {
                            WriteMode::Once(timeout) => {
                                let put = clients[home].put(key.as_str(), value.as_str(), None);
                                match tokio::time::timeout(timeout, put).await {
                                    Ok(Ok(_)) => log.acked.push((key, value, Instant::now())),
                                    _ => {
                                        log.failed.push((key, value));
                                        tokio::time::sleep(Duration::from_millis(50)).await;
                                    }
                                }
                            }
                            WriteMode::Retrying(attempt, budget) => {
                                match put_retrying(
                                    &mut clients,
                                    home,
                                    &key,
                                    &value,
                                    attempt,
                                    budget,
                                )
                                .await
                                {
                                    Ok(_) => log.acked.push((key, value, Instant::now())),
                                    Err(errors) => {
                                        log.errors.push(format!("{key}: {errors:?}"));
                                        log.failed.push((key, value));
                                    }
                                }
                            }
                        }
                    }
                    log
                })
            })
            .collect();
        Writers { stop, tasks }
    }

    /// Stops the writers and returns their logs.
    pub async fn stop(self) -> Vec<WriterLog> {
        self.stop.store(true, Ordering::SeqCst);
        let mut logs = Vec::new();
        for task in self.tasks {
            logs.push(task.await.expect("writer task"));
        }
        logs
    }
}

/// Checks every member's copy of `prefix` (serializable reads, after convergence) against the
/// writers' logs: every acknowledged write is there with its value, written once (version 1,
/// created and modified at the same revision), nothing else is there but writes with unknown
/// outcome (also version 1), and every member has the same keys. Returns the number of keys.
pub async fn check_writes(cluster: &mut Cluster, prefix: &str, logs: &[WriterLog]) -> usize {
    let acked: HashMap<&str, &str> = logs
        .iter()
        .flat_map(|l| l.acked.iter().map(|(k, v, _)| (k.as_str(), v.as_str())))
        .collect();
    let unknown: HashMap<&str, &str> = logs
        .iter()
        .flat_map(|l| l.failed.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
    let mut first: Option<BTreeMap<String, KeyState>> = None;
    for i in cluster.running() {
        let mut client = cluster.client(i).await;
        let keys = local_keys(&mut client, prefix).await;
        let name = &cluster.node(i).name;
        let lost: Vec<&&str> = acked.keys().filter(|k| !keys.contains_key(**k)).collect();
        assert!(
            lost.is_empty(),
            "{name} lost {} acknowledged writes (of {}), e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(10)]
        );
        for (key, state) in &keys {
            let expected = acked
                .get(key.as_str())
                .or_else(|| unknown.get(key.as_str()))
                .unwrap_or_else(|| panic!("{name} has {key} = {state:?}, never written"));
            assert_eq!(&state.value, expected, "{name}: value of {key}");
            assert_eq!(
                (state.version, state.create_revision),
                (1, state.mod_revision),
                "{name}: {key} was written once but applied more than once: {state:?}"
            );
        }
        match &first {
            None => first = Some(keys),
            Some(f) => assert!(
                *f == keys,
                "{name} differs from the first member under {prefix}"
            ),
        }
    }
    first.map_or(0, |f| f.len())
}

/// Waits until a put on node i succeeds (each attempt giving up after `attempt`); returns how
/// long it took. Panics after `timeout` with the last error.
pub async fn wait_writable(
    cluster: &Cluster,
    i: usize,
    key: &str,
    attempt: Duration,
    timeout: Duration,
) -> Duration {
    let t = Instant::now();
    let mut client = cluster.client(i).await;
    let mut last = String::new();
    while t.elapsed() < timeout {
        match tokio::time::timeout(attempt, client.put(key, "probe", None)).await {
            Ok(Ok(_)) => return t.elapsed(),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer within {attempt:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{} not writable within {timeout:?}: {last}\n{}",
        cluster.node(i).name,
        cluster.log_tails(30)
    );
}

/// Waits until a node other than `old` leads with a term above `old_term`; returns it.
pub async fn wait_new_leader(
    cluster: &mut Cluster,
    old: usize,
    old_term: u64,
    timeout: Duration,
) -> usize {
    let t = Instant::now();
    loop {
        for (i, status) in cluster.statuses().await {
            let Ok(status) = status else { continue };
            let me = status.header().map(|h| h.member_id());
            if i != old && me == Some(status.leader()) && status.raft_term() > old_term {
                return i;
            }
        }
        if t.elapsed() > timeout {
            panic!(
                "no new leader within {timeout:?}\n{}",
                cluster.log_tails(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Forming a cluster; join tokens.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_forms_from_nothing_and_replicates_writes_everywhere() {
    let mut cluster = start(options(3, Duration::from_secs(5)));

    // Roles: three voters, no learner, as MemberList and `raftkine status` see them.
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        let members = c.member_list().await.expect("member list");
        let mut list: Vec<(u64, String, bool)> = members
            .members()
            .iter()
            .map(|m| (m.id(), m.name().to_string(), m.is_learner()))
            .collect();
        list.sort();
        assert_eq!(list.len(), 3, "{}: members {list:?}", cluster.node(i).name);
        assert!(
            list.iter().all(|m| !m.2),
            "{}: all three are voters: {list:?}",
            cluster.node(i).name
        );
        for m in members.members() {
            assert!(
                m.peer_urls().iter().all(|u| u.starts_with("https://")),
                "peer URLs are TLS: {m:?}"
            );
            assert!(!m.client_urls().is_empty(), "client URLs: {m:?}");
        }
        ids.push(list);
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "members agree: {ids:?}"
    );
    let status = cluster.cluster_status(1).expect("raftkine status");
    let (voters, standbys) = Cluster::roles(&status);
    assert_eq!(voters, ["n1", "n2", "n3"], "status: {status}");
    assert!(standbys.is_empty(), "status: {status}");
    assert_eq!(status["high_availability"], true, "status: {status}");

    // A write on every member is visible on every member (linearizable reads at once,
    // serializable ones once converged).
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        c.put(format!("form/from-{i}"), format!("v{i}"), None)
            .await
            .unwrap_or_else(|e| panic!("put on {}: {e}", cluster.node(i).name));
    }
    for j in 0..3 {
        let mut c = cluster.client(j).await;
        let r = c
            .get("form/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("linearizable range");
        let got: Vec<(String, String)> = r
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key_str().unwrap().to_string(),
                    kv.value_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = (0..3)
            .map(|i| (format!("form/from-{i}"), format!("v{i}")))
            .collect();
        assert_eq!(got, want, "linearizable read on {}", cluster.node(j).name);
    }
    let rev = cluster.wait_converged(Duration::from_secs(10)).await;
    for j in 0..3 {
        let mut c = cluster.client(j).await;
        let keys = local_keys(&mut c, "form/").await;
        assert_eq!(
            keys.len(),
            3,
            "serializable read on {}",
            cluster.node(j).name
        );
        assert!(keys.values().all(|k| k.mod_revision <= rev));
    }
}

/// The members as MemberList on node 0 shows them: (id, name, learner), sorted.
async fn members(cluster: &Cluster) -> Vec<(u64, String, bool)> {
    let mut c = cluster.client(0).await;
    let r = c.member_list().await.expect("member list");
    let mut list: Vec<_> = r
        .members()
        .iter()
        .map(|m| (m.id(), m.name().to_string(), m.is_learner()))
        .collect();
    list.sort();
    list
}

/// Asserts a join attempt was refused quickly with a message containing `expected`, and the
/// cluster's members did not change.
async fn assert_refused(cluster: &mut Cluster, arg: &str, expected: &[&str], what: &str) {
    let before = members(cluster).await;
    let t = Instant::now();
    let attempt =
        tokio::task::block_in_place(|| cluster.join_attempt(arg, Duration::from_secs(15)));
    let status = attempt.status.unwrap_or_else(|| {
        panic!(
            "{what}: `raftkine join` was still running after 15 s (joined?):\n{}",
            attempt.output
        )
    });
    assert!(
        !status.success(),
        "{what}: join succeeded:\n{}",
        attempt.output
    );
    let message = attempt.output.to_lowercase();
    assert!(
        expected.iter().any(|e| message.contains(e)),
        "{what}: refused, but the message names none of {expected:?}:\n{}",
        attempt.output
    );
    eprintln!(
        "cluster_ha: {what}: refused in {:.1?}: {}",
        t.elapsed(),
        attempt.output.lines().last().unwrap_or("").trim()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        members(cluster).await,
        before,
        "{what}: the members changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_refuses_used_expired_and_wrong_join_tokens() {
    let mut cluster = start(options(2, Duration::from_secs(5)));
    let used = cluster
        .node(1)
        .joined_with
        .clone()
        .expect("n2 joined with a token");
    assert_refused(&mut cluster, &used, &["used"], "a used token").await;

    let expiring = tokio::task::block_in_place(|| cluster.join_token_with_ttl(Some("1s")));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_refused(&mut cluster, &expiring, &["expired"], "an expired token").await;

    // A valid token with its secret changed.
    let valid = tokio::task::block_in_place(|| cluster.join_token());
    let (addr, token) = valid.split_once('/').expect("ADDR/TOKEN");
    let flipped = if token.starts_with('0') { "1" } else { "0" };
    let wrong = format!("{addr}/{flipped}{}", &token[1..]);
    assert_refused(
        &mut cluster,
        &wrong,
        &["unknown", "invalid"],
        "a wrong token",
    )
    .await;
    // Not a token at all.
    assert_refused(
        &mut cluster,
        &format!("{addr}/nonsense"),
        &["join"],
        "a malformed token",
    )
    .await;
    // The valid token was not burnt by the wrong guesses: a node joins with it, as a standby
    // (the cluster wants 3 voters and has 2: it is promoted).
    let t = Instant::now();
    tokio::task::block_in_place(|| {
        let n = cluster.len();
        cluster.add_node_with(&valid);
        assert_eq!(cluster.len(), n + 1);
        cluster.wait_voters(3, Duration::from_secs(20));
    });
    eprintln!(
        "cluster_ha: a third node joined and was promoted in {:.1?}",
        t.elapsed()
    );
}

/// A token whose CA fingerprint is wrong (someone else's cluster, or a man in the middle) is
/// refused, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_refuses_a_join_token_with_a_wrong_ca_fingerprint_clearly() {
    let mut cluster = start(options(1, Duration::from_secs(5)));
    let valid = tokio::task::block_in_place(|| cluster.join_token());
    let last = valid.chars().last().unwrap();
    let wrong = format!(
        "{}{}",
        &valid[..valid.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    assert_refused(
        &mut cluster,
        &wrong,
        &["fingerprint", "certificate", "ca "],
        "a token with a wrong CA fingerprint",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. The leader killed under a write load.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_kill_leader_under_load_loses_no_acknowledged_write() {
    let mut cluster = start(options(3, Duration::from_secs(3)));
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let term = cluster
        .node(leader)
        .status(Duration::from_secs(2))
        .await
        .unwrap()
        .raft_term();
    let clients = cluster.clients().await;
    let writers = Writers::start("load", &clients, 6, WriteMode::Once(Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let killed_at = Instant::now();
    cluster.kill(leader);
    let new_leader = wait_new_leader(&mut cluster, leader, term, Duration::from_secs(10)).await;
    let election = killed_at.elapsed();
    let writable = wait_writable(
        &cluster,
        new_leader,
        "probe/after-kill",
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;
    let write_recovery = killed_at.elapsed();
    eprintln!(
        "cluster_ha: leader {} killed: {} leads after {election:.2?}; a write on it succeeded \
         {write_recovery:.2?} after the kill ({writable:.2?} after the election)",
        cluster.node(leader).name,
        cluster.node(new_leader).name
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = writers.stop().await;

    // The longest pause in the acknowledgements of the writers on survivors around the kill:
    // how long the clients saw the cluster unavailable.
    let mut acks: Vec<Instant> = logs
        .iter()
        .enumerate()
        .filter(|(w, _)| w % 3 != leader)
        .flat_map(|(_, l)| l.acked.iter().map(|a| a.2))
        .collect();
    acks.sort();
    let pause = acks
        .windows(2)
        .filter(|w| w[1] > killed_at)
        .map(|w| w[1] - w[0])
        .max();
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    let failed: usize = logs.iter().map(|l| l.failed.len()).sum();
    eprintln!(
        "cluster_ha: load: {acked} writes acknowledged, {failed} failed; longest pause of the \
         writers on survivors: {pause:.2?}"
    );
    assert!(
        election < Duration::from_secs(3),
        "new leader after {election:?}"
    );
    assert!(
        write_recovery < Duration::from_secs(3),
        "first write after the kill succeeded after {write_recovery:?}"
    );
    assert!(
        acked > 50,
        "the load wrote too little to mean anything: {acked}"
    );

    // The old leader comes back; everyone converges and has every acknowledged write, once.
    restart(&mut cluster, leader);
    cluster.wait_converged(Duration::from_secs(20)).await;
    let keys = check_writes(&mut cluster, "load", &logs).await;
    eprintln!("cluster_ha: all 3 members hold the same {keys} keys, each written once");
}

/// The leader kill -9ed under load, again and again: each time it restarts (on the same storage
/// dir), rejoins and the cluster converges. A member that cannot start after a crash would need
/// a manual repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_leader_killed_under_load_restarts_every_time() {
    let mut cluster = start(options(3, Duration::from_secs(3)));
    let clients = cluster.clients().await;
    let writers = Writers::start(
        "crash",
        &clients,
        6,
        WriteMode::Once(Duration::from_secs(3)),
    );
    let mut failures = Vec::new();
    for round in 0..5 {
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        cluster.kill(leader);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let name = cluster.node(leader).name.clone();
        let started = tokio::task::block_in_place(|| cluster.node_mut(leader).try_restart());
        if let Err(e) = started {
            // Once more: is the member broken for good?
            let again = tokio::task::block_in_place(|| cluster.node_mut(leader).try_restart());
            failures.push(format!(
                "round {round}: {name} (the killed leader) did not restart: {e}\n\
                 a second start {}",
                match again {
                    Ok(()) => "worked".to_string(),
                    Err(_) => "failed the same way".to_string(),
                }
            ));
            if cluster.node_mut(leader).is_running() {
                continue;
            }
            break;
        }
    }
    let logs = writers.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    cluster.wait_converged(Duration::from_secs(20)).await;
    let keys = check_writes(&mut cluster, "crash", &logs).await;
    eprintln!("cluster_ha: 5 leader crashes under load: all members hold the same {keys} keys");
}

// ---------------------------------------------------------------------------------------------
// 3. Quorum loss and recovery; five nodes survive two failures.

/// Quorum loss with a follower surviving (the leader and the other follower killed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_quorum_loss_fails_requests_in_time_and_recovers_by_itself() {
    quorum_loss(false).await;
}

/// Quorum loss with the leader surviving (both followers killed): it must not keep answering
/// as a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_quorum_loss_on_the_leader_fails_requests_in_time_and_recovers_by_itself() {
    quorum_loss(true).await;
}

async fn quorum_loss(leader_survives: bool) {
    let mut cluster = start(options(3, Duration::from_secs(15)));
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let (survivor, killed) = if leader_survives {
        (leader, [(leader + 1) % 3, (leader + 2) % 3])
    } else {
        ((leader + 1) % 3, [leader, (leader + 2) % 3])
    };
    let other = killed[1];
    let role = if leader_survives {
        "leader"
    } else {
        "follower"
    };
    let mut c = cluster.client(survivor).await;
    c.put("q/before", "1", None).await.expect("put before");
    // The survivor has applied it (linearizable read on it).
    c.get("q/before", None).await.expect("get before");

    for k in killed {
        cluster.kill(k);
    }
    let lost_at = Instant::now();

    // A write and a linearizable read on the survivor, concurrently: both fail within the
    // request deadline (5 s), with an etcd-like error.
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let put = async move {
        let t = Instant::now();
        (c1.put("q/during", "x", None).await.map(|_| ()), t.elapsed())
    };
    let get = async move {
        let t = Instant::now();
        (c2.get("q/before", None).await.map(|_| ()), t.elapsed())
    };
    let ((put_result, put_took), (get_result, get_took)) = tokio::join!(put, get);
    // Meanwhile serializable reads are answered locally.
    let local = c
        .get("q/before", Some(serializable()))
        .await
        .expect("serializable read without quorum");
    assert_eq!(local.kvs()[0].value_str().unwrap(), "1");

    for (what, result, took) in [
        ("write", put_result, put_took),
        ("linearizable read", get_result, get_took),
    ] {
        let e = result.expect_err(&format!("a {what} without quorum must fail"));
        let (code, message) = code_and_message(&e);
        eprintln!(
            "cluster_ha: without quorum a {what} on the surviving {role} failed after \
             {took:.2?}: {code:?} {message:?}"
        );
        assert!(
            took < Duration::from_secs(7),
            "{what} failed only after {took:?}"
        );
        assert_eq!(code, Code::Unavailable, "{what}: {e}");
        assert!(
            [
                "etcdserver: request timed out",
                "etcdserver: no leader",
                "etcdserver: request timed out, possibly due to previous leader failure",
            ]
            .contains(&message.as_str()),
            "{what}: etcd's message expected, got {message:?}"
        );
    }
    // Still answered locally a while later.
    c.get("q/before", Some(serializable()))
        .await
        .expect("serializable read without quorum");

    // One node back: writes resume without any manual step.
    let back = Instant::now();
    restart(&mut cluster, other);
    let restarted = back.elapsed();
    let writable = wait_writable(
        &cluster,
        survivor,
        "q/after",
        Duration::from_secs(2),
        Duration::from_secs(15),
    )
    .await;
    eprintln!(
        "cluster_ha: quorum back: {} restarted (listening) in {restarted:.2?}, writes on {} \
         succeeded {:.2?} after the restart began (quorum lost for {:.1?})",
        cluster.node(other).name,
        cluster.node(survivor).name,
        back.elapsed(),
        back - lost_at
    );
    let _ = writable;
    for i in [survivor, other] {
        let mut c = cluster.client(i).await;
        let r = c.get("q/after", None).await.expect("linearizable read");
        assert_eq!(r.kvs().len(), 1, "q/after on {}", cluster.node(i).name);
    }
    // The write that failed without quorum: its outcome is unknown to the client (etcd's
    // "request timed out" says so); show what became of it.
    let during = c.get("q/during", None).await.expect("linearizable read");
    eprintln!(
        "cluster_ha: the write that failed without quorum on the {role} is {} after recovery",
        if during.kvs().is_empty() {
            "absent"
        } else {
            "PRESENT"
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_of_five_survives_two_failures() {
    let mut cluster = start(ClusterOptions {
        voters: 5,
        ..options(5, Duration::from_secs(3))
    });
    let status = cluster.cluster_status(0).expect("status");
    assert_eq!(Cluster::roles(&status).0.len(), 5, "5 voters: {status}");
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let mut c = cluster.client((leader + 1) % 5).await;
    c.put("five/before", "1", None).await.expect("put");

    // Kill the leader and one more.
    let killed = [leader, (leader + 1) % 5];
    let t = Instant::now();
    for &k in &killed {
        cluster.kill(k);
    }
    let survivors: Vec<usize> = (0..5).filter(|i| !killed.contains(i)).collect();
    let took = wait_writable(
        &cluster,
        survivors[0],
        "five/after",
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "cluster_ha: 5 nodes, leader and one more killed: writes succeed again after {:.2?}",
        t.elapsed()
    );
    let _ = took;
    for &i in &survivors {
        let mut c = cluster.client(i).await;
        c.put(format!("five/on-{i}"), "x", None)
            .await
            .unwrap_or_else(|e| panic!("put on {}: {e}", cluster.node(i).name));
        let r = c
            .get(
                "five/",
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .expect("linearizable read");
        assert!(
            r.kvs().len() >= 3,
            "on {}: {:?}",
            cluster.node(i).name,
            r.kvs()
        );
    }
    for &k in &killed {
        restart(&mut cluster, k);
    }
    cluster.wait_converged(Duration::from_secs(20)).await;
    let mut c = cluster.client(killed[0]).await;
    let r = c
        .get("five/", Some(serializable().with_prefix()))
        .await
        .expect("read");
    assert_eq!(r.kvs().len(), 2 + survivors.len(), "{:?}", r.kvs());
}

// ---------------------------------------------------------------------------------------------
// 4. The leader partitioned away.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_partitioned_leader_stops_writing_and_its_unacknowledged_writes_vanish() {
    let mut cluster = start(ClusterOptions {
        proxies: true,
        ..options(3, Duration::from_secs(8))
    });
    let old = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let term = cluster
        .node(old)
        .status(Duration::from_secs(2))
        .await
        .unwrap()
        .raft_term();
    let mut on_old = cluster.client(old).await;
    on_old.put("part/before", "1", None).await.expect("put");

    let cut_at = Instant::now();
    cluster.isolate(old);
    // Writes sent to the old leader while it is cut off fail (none is acknowledged).
    let mut tries = Vec::new();
    for n in 0..3 {
        let key = format!("part/old-{n}");
        let t = Instant::now();
        let r = on_old.put(key.as_str(), "lost", None).await;
        tries.push((
            key,
            r.is_ok(),
            t.elapsed(),
            r.err().map(|e| code_and_message(&e)),
        ));
    }
    eprintln!("cluster_ha: writes on the isolated old leader: {tries:?}");
    assert!(
        tries.iter().all(|t| !t.1),
        "the isolated old leader acknowledged a write: {tries:?}"
    );

    // The majority side elected a leader meanwhile and takes writes.
    let new = wait_new_leader(&mut cluster, old, term, Duration::from_secs(10)).await;
    eprintln!(
        "cluster_ha: {} leads the majority {:.2?} after the cut",
        cluster.node(new).name,
        cut_at.elapsed()
    );
    let majority: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &i in &majority {
        let mut c = cluster.client(i).await;
        c.put(format!("part/majority-{i}"), "ok", None)
            .await
            .unwrap_or_else(|e| panic!("put on {}: {e}", cluster.node(i).name));
    }
    // The old leader does not serve linearizable reads from its stale state either.
    let stale = on_old.get("part/majority-0", None).await;
    assert!(
        stale.is_err(),
        "the isolated member answered a linearizable read: {stale:?}"
    );

    let healed_at = Instant::now();
    cluster.heal();
    let rev = cluster.wait_converged(Duration::from_secs(20)).await;
    eprintln!(
        "cluster_ha: healed: all members converged at revision {rev} in {:.2?}",
        healed_at.elapsed()
    );
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        let keys = local_keys(&mut c, "part/").await;
        let names: Vec<&str> = keys.keys().map(String::as_str).collect();
        let mut want = vec!["part/before"];
        let majority_keys: Vec<String> = majority
            .iter()
            .map(|i| format!("part/majority-{i}"))
            .collect();
        want.extend(majority_keys.iter().map(String::as_str));
        want.sort();
        assert_eq!(
            names,
            want,
            "{}: the old leader's unacknowledged writes must be gone",
            cluster.node(i).name
        );
    }
    // And the old leader takes writes again (as a follower).
    on_old
        .put("part/after", "1", None)
        .await
        .expect("write on the healed old leader");
}

// ---------------------------------------------------------------------------------------------
// 5. Rolling restart.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rolling_restart_under_load_needs_only_retries() {
    let mut cluster = start(options(3, Duration::from_secs(3)));
    let clients = cluster.clients().await;
    let writers = Writers::start(
        "roll",
        &clients,
        4,
        WriteMode::Retrying(Duration::from_millis(1500), Duration::from_secs(6)),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    for i in 0..3 {
        let t = Instant::now();
        restart(&mut cluster, i);
        // Back in the cluster: a linearizable read on it succeeds (ReadIndex through the
        // leader, then applied up to there).
        let mut c = cluster.client(i).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match c
                .get("roll/", Some(GetOptions::new().with_count_only()))
                .await
            {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    panic!("{} not back after a restart: {e}", cluster.node(i).name)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        eprintln!(
            "cluster_ha: rolling restart: {} killed, restarted and serving in {:.2?}",
            cluster.node(i).name,
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let logs = writers.stop().await;
    let errors: Vec<&String> = logs.iter().flat_map(|l| l.errors.iter()).collect();
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    eprintln!("cluster_ha: rolling restart: {acked} writes acknowledged");
    assert!(
        errors.is_empty(),
        "writes that no member took within the retry budget: {errors:#?}"
    );
    cluster.wait_converged(Duration::from_secs(20)).await;
    let mut c = cluster.client(0).await;
    for log in &logs {
        for (key, value, _) in &log.acked {
            let r = c.get(key.as_str(), Some(serializable())).await.unwrap();
            assert_eq!(
                r.kvs().first().map(|kv| kv.value_str().unwrap()),
                Some(value.as_str()),
                "{key}"
            );
        }
    }
}

/// A graceful stop (SIGTERM, what systemd and rolling upgrades do) of a member of a running
/// cluster ends the process promptly, the follower's and the leader's; the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_member_exits_promptly_on_sigterm() {
    let mut cluster = start(options(3, Duration::from_secs(3)));
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let follower = (leader + 1) % 3;
    let third = (leader + 2) % 3;
    for (what, i) in [("follower", follower), ("leader", leader)] {
        let took =
            tokio::task::block_in_place(|| cluster.node_mut(i).terminate(Duration::from_secs(10)));
        eprintln!(
            "cluster_ha: SIGTERM to the {what} {}: exited after {took:.2?}",
            cluster.node(i).name
        );
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(5)),
            "the {what} {} was still running 10 s after SIGTERM (killed)\n{}",
            cluster.node(i).name,
            cluster.node(i).log_tail(10)
        );
        tokio::task::block_in_place(|| cluster.start_node(i));
        wait_writable(
            &cluster,
            third,
            "term/probe",
            Duration::from_secs(1),
            Duration::from_secs(10),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Snapshot catch-up.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_member_down_past_log_retention_catches_up_by_snapshot() {
    let mut cluster = start(ClusterOptions {
        extra_args: vec!["--snapshot-count".into(), SNAPSHOT_COUNT.to_string()],
        ..options(3, Duration::from_secs(5))
    });
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let down = (leader + 1) % 3;
    cluster.kill(down);
    let up: Vec<usize> = (0..3).filter(|&i| i != down).collect();
    let clients: Vec<Client> = {
        let mut v = Vec::new();
        for &i in &up {
            v.push(cluster.client(i).await);
        }
        v
    };
    let total = snapshot_writes();
    let t = Instant::now();
    let per = total / 8;
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let mut c = clients[w % clients.len()].clone();
            tokio::spawn(async move {
                for k in 0..per {
                    c.put(format!("snap/{w}/{k:05}"), "x", None)
                        .await
                        .expect("put while a member is down");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!(
        "cluster_ha: {} writes with a member down in {:.1?}",
        per * 8,
        t.elapsed()
    );
    let t = Instant::now();
    let before = cluster.node(down).log().len();
    restart(&mut cluster, down);
    let rev = cluster.wait_converged(Duration::from_secs(60)).await;
    eprintln!(
        "cluster_ha: {} restarted and converged (HashKV equal at revision {rev}) in {:.1?}",
        cluster.node(down).name,
        t.elapsed()
    );
    let log = cluster.node(down).log();
    let after = &log[before..];
    assert!(
        after.contains("installing snapshot") || after.contains("restored snapshot"),
        "{} caught up without a snapshot: was the log not compacted?",
        cluster.node(down).name
    );
    let mut c = cluster.client(down).await;
    let r = c
        .get(
            "snap/",
            Some(serializable().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(r.count(), (per * 8) as i64);
}

/// The log retention (`--snapshot-count`) of the snapshot test: small, to need few writes (the
/// default is 10,000).
const SNAPSHOT_COUNT: usize = 500;

/// Writes for the snapshot test: the log is compacted once more than twice the retention is
/// applied; this passes it several times.
fn snapshot_writes() -> usize {
    6 * SNAPSHOT_COUNT
}

/// A follower that holds many keys (1 KiB values, written in txns of 100 as a bulk load does),
/// killed with -9 and started again on its storage dir, answers a linearizable read and holds
/// every key: it finds the leader again after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_follower_with_many_keys_restarts_and_serves_linearizable_reads() {
    use etcd_client::{Txn, TxnOp};
    const KEYS: usize = 10_000;
    let mut cluster = start(options(3, Duration::from_secs(10)));
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let mut c = cluster.client(leader).await;
    let value = vec![b'v'; 1024];
    for start in (0..KEYS).step_by(100) {
        let ops: Vec<TxnOp> = (start..start + 100)
            .map(|k| TxnOp::put(format!("many/{k:08}"), value.clone(), None))
            .collect();
        c.txn(Txn::new().and_then(ops)).await.expect("bulk txn");
    }
    let follower = (leader + 1) % 3;
    cluster.wait_converged(Duration::from_secs(60)).await;
    cluster.kill(follower);
    let t = Instant::now();
    restart(&mut cluster, follower);
    let mut f = cluster.client(follower).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let count = loop {
        match f
            .get(
                "many/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
        {
            Ok(r) => break r.count(),
            Err(e) if Instant::now() < deadline => {
                eprintln!("cluster_ha: restarted follower: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "the restarted follower answered no linearizable read in 30 s: {e}\n{}",
                cluster.log_tails(40)
            ),
        }
    };
    eprintln!(
        "cluster_ha: follower with {KEYS} keys restarted and served a linearizable read in {:.1?}",
        t.elapsed()
    );
    assert_eq!(count, KEYS as i64);
}
