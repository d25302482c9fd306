//! The etcdctl comparison: the commands a person would type (`/usr/bin/etcdctl`, API v3) run
//! against both servers, comparing exit status, stdout and stderr after masking what may differ:
//! each server's member id, cluster id, lease ids (learned from `lease grant`), endpoint and
//! peer URLs, raft term/index, db size, server version, log timestamps, remaining TTLs.
//! `{lease}` in a command stands for the lease that side granted last.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pair::{first_difference, start_servers, subject_name};
use crate::support::Server;

const ETCDCTL: &str = "/usr/bin/etcdctl";

/// What one etcdctl invocation produced (after masking, when compared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// One server as etcdctl sees it, with what its output must be masked of.
struct Ctl {
    server: Server,
    member_id: u64,
    cluster_id: u64,
    /// Lease ids this side granted, in order.
    leases: Vec<i64>,
}

impl Ctl {
    async fn new(server: Server) -> Ctl {
        let mut client = server.client().await;
        let members = client.member_list().await.expect("member list");
        let header = members.header().expect("member list header");
        Ctl {
            member_id: header.member_id(),
            cluster_id: header.cluster_id(),
            server,
            leases: vec![],
        }
    }

    fn address(&self) -> String {
        self.server
            .endpoint
            .trim_start_matches("http://")
            .to_string()
    }

    /// etcdctl is given the `http://HOST:PORT` form: etcdctl 3.4 then sends the whole URL as the
    /// HTTP/2 `:authority` of its maintenance calls, which raftkine must accept as etcd does.
    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(ETCDCTL);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.server.endpoint))
            .args(args);
        cmd
    }

    /// `line` split into arguments, with `{lease}` replaced by this side's last lease (hex).
    fn args(&self, line: &str) -> Vec<String> {
        let lease = self
            .leases
            .last()
            .map(|l| format!("{l:x}"))
            .unwrap_or_default();
        split_args(&line.replace("{lease}", &lease))
    }

    fn run(&mut self, line: &str, stdin: Option<&str>) -> Output {
        let mut child = self
            .command(&self.args(line))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run etcdctl");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        let raw = Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.learn_lease(&raw.stdout);
        raw
    }

    /// Remembers the id from `lease <hex> granted with TTL(...)` or its `-w json` form.
    fn learn_lease(&mut self, stdout: &str) {
        if stdout.contains("\"TTL\":") && stdout.contains("\"ID\":") {
            let tail = &stdout[stdout.find("\"ID\":").unwrap() + 5..];
            let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
            self.leases.push(digits.parse().expect("lease id"));
            return;
        }
        let mut words = stdout.split_whitespace();
        if words.next() == Some("lease") {
            if let (Some(hex), Some("granted")) = (words.next(), words.next()) {
                if stdout.trim_end().ends_with("s)") && !stdout.contains("remaining") {
                    self.leases
                        .push(i64::from_str_radix(hex, 16).expect("lease id"));
                }
            }
        }
    }

    fn mask(&self, out: &Output) -> Output {
        Output {
            status: out.status,
            stdout: self.mask_text(&out.stdout),
            stderr: self.mask_text(&out.stderr),
        }
    }

    fn mask_text(&self, text: &str) -> String {
        let mut s = text.replace(&self.address(), "<endpoint>");
        for (id, name) in [
            (self.member_id, "<member-id>"),
            (self.cluster_id, "<cluster-id>"),
        ] {
            s = replace_id(&s, id, name);
        }
        for (n, lease) in self.leases.iter().enumerate() {
            s = replace_id(&s, *lease as u64, &format!("<lease#{n}>"));
        }
        s = mask_peer_urls(&s);
        for key in [
            "raft_term",
            "raftTerm",
            "raftIndex",
            "raftAppliedIndex",
            "dbSize",
            "dbSizeInUse",
            "ts",
            "ttl",
            "took",
            "size",
        ] {
            s = mask_json_value(&s, key);
        }
        s = mask_json_string(&s, "version");
        s = mask_between(&s, "endpoint://client-", "/", "<uuid>");
        s = mask_between(&s, "remaining(", "s)", "<n>");
        s = mask_between(&s, "\"RaftTerm\" : ", "\n", "<n>");
        sort_lease_list(&s)
    }
}

/// Replaces an id written in decimal, zero-padded hex or plain hex, as a whole token.
fn replace_id(s: &str, id: u64, name: &str) -> String {
    let mut s = s.to_string();
    for form in [
        format!("{:016x}", id),
        format!("{:x}", id),
        id.to_string(),
        (id as i64).to_string(),
    ] {
        s = replace_token(&s, &form, name);
    }
    s
}

/// Replaces `needle` where it is not part of a longer alphanumeric token.
fn replace_token(s: &str, needle: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(needle) {
        let before = rest[..i].chars().last();
        let after = rest[i + needle.len()..].chars().next();
        let bounded = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
        out.push_str(&rest[..i]);
        if bounded(before) && bounded(after) {
            out.push_str(with);
        } else {
            out.push_str(needle);
        }
        rest = &rest[i + needle.len()..];
    }
    out.push_str(rest);
    out
}

/// `"key":<value>` -> `"key":<key>` for a number, string or bare token value.
fn mask_json_value(s: &str, key: &str) -> String {
    let pattern = format!("\"{key}\":");
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(&pattern) {
        out.push_str(&rest[..i + pattern.len()]);
        out.push_str(&format!("<{key}>"));
        let value = &rest[i + pattern.len()..];
        let len = if let Some(stripped) = value.strip_prefix('"') {
            stripped.find('"').map(|j| j + 2).unwrap_or(value.len())
        } else {
            value.find([',', '}', ']', '\n']).unwrap_or(value.len())
        };
        rest = &value[len..];
    }
    out.push_str(rest);
    out
}

/// Like `mask_json_value` but only string values (`"version":1` in a kv stays).
fn mask_json_string(s: &str, key: &str) -> String {
    let pattern = format!("\"{key}\":\"");
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(&pattern) {
        out.push_str(&rest[..i + pattern.len()]);
        out.push_str(&format!("<{key}>\""));
        let value = &rest[i + pattern.len()..];
        rest = &value[value.find('"').map(|j| j + 1).unwrap_or(value.len())..];
    }
    out.push_str(rest);
    out
}

/// Masks whatever sits between `start` and the next `end`.
fn mask_between(s: &str, start: &str, end: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(start) {
        out.push_str(&rest[..i + start.len()]);
        let tail = &rest[i + start.len()..];
        match tail.find(end) {
            Some(j) => {
                out.push_str(with);
                rest = &tail[j..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Loopback URLs other than the client endpoint (already masked) are peer URLs. Their scheme
/// goes too: it says whether peer traffic uses TLS (raftkine's always does; this etcd's not).
fn mask_peer_urls(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    let start = "127.0.0.1:";
    while let Some(i) = rest.find(start) {
        out.push_str(&rest[..i]);
        for scheme in ["https://", "http://"] {
            if out.ends_with(scheme) {
                out.truncate(out.len() - scheme.len());
            }
        }
        out.push_str("<peer>");
        let tail = &rest[i + start.len()..];
        let digits = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// `lease list` prints ids in Go map order: sort the lines after "found N leases".
fn sort_lease_list(s: &str) -> String {
    if !s.starts_with("found ") {
        return s.to_string();
    }
    let mut lines: Vec<&str> = s.lines().collect();
    lines[1..].sort();
    lines.join("\n") + "\n"
}

/// Splits a command line on whitespace, honouring '...' and "..." (which may be empty).
fn split_args(line: &str) -> Vec<String> {
    let mut args = vec![];
    let mut cur = String::new();
    let mut in_arg = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_arg = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_arg {
                    args.push(std::mem::take(&mut cur));
                    in_arg = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_arg = true;
            }
        }
    }
    if in_arg {
        args.push(cur);
    }
    args
}

/// The oracle and the subject, driven through etcdctl.
struct CtlPair {
    oracle: Ctl,
    subject: Ctl,
    test: String,
    failures: Vec<String>,
    keep_going: bool,
}

impl CtlPair {
    async fn start(test: &str) -> CtlPair {
        let (oracle, subject) = start_servers().await;
        CtlPair {
            oracle: Ctl::new(oracle).await,
            subject: Ctl::new(subject).await,
            test: test.into(),
            failures: vec![],
            keep_going: std::env::var("CONFORMANCE_KEEP_GOING").as_deref() == Ok("1"),
        }
    }

    /// Runs `etcdctl <line>` on both and compares; returns the oracle's masked output.
    fn cmd(&mut self, line: &str) -> Output {
        self.cmd_with_input(line, None)
    }

    fn cmd_with_input(&mut self, line: &str, stdin: Option<&str>) -> Output {
        let a = self.oracle.run(line, stdin);
        let b = self.subject.run(line, stdin);
        self.compare(line, self.oracle.mask(&a), self.subject.mask(&b))
    }

    fn compare(&mut self, line: &str, a: Output, b: Output) -> Output {
        if std::env::var("CONFORMANCE_TRACE").as_deref() == Ok("1") {
            println!("[{}] $ etcdctl {line}\n{a:#?}", self.test);
        }
        if a != b {
            self.fail(format!(
                "\n=== etcdctl divergence in `{}`\n$ etcdctl {line}\netcd 3.4 (oracle): {a:#?}\n{}: {b:#?}\n{}",
                self.test,
                subject_name(),
                first_difference(&a, &b)
            ));
        }
        a
    }

    fn fail(&mut self, report: String) {
        if self.keep_going {
            eprintln!("{report}");
            self.failures.push(report);
        } else {
            panic!("{report}");
        }
    }

    fn finish(self) {
        if !self.failures.is_empty() {
            panic!(
                "{} etcdctl divergence(s) in `{}`:\n{}",
                self.failures.len(),
                self.test,
                self.failures.join("\n")
            );
        }
    }
}

#[tokio::test]
async fn etcdctl_kv() {
    let mut c = CtlPair::start("etcdctl_kv").await;
    for line in [
        "get foo",
        "put foo bar",
        "put foo bar2 --prev-kv",
        "put foo/1 a",
        "put foo/2 b",
        "put zoo z",
        "put foo/3 c -w json",
        "get foo",
        "get foo -w json",
        "get foo --prefix",
        "get foo --prefix --limit 1",
        "get foo --prefix --limit=2 -w json",
        "get foo --rev 2",
        "get foo --rev 1",
        "get foo --rev 100",
        "get foo --prefix --print-value-only",
        "get foo --prefix --keys-only",
        "get foo --from-key",
        "get '' --from-key",
        "get foo --prefix --sort-by=MODIFY --order=DESCEND",
        "get foo --prefix --sort-by=VALUE",
        "get foo zoo",
        "get foo --prefix --consistency=s",
        "get foo --prefix -w fields",
        "get missing",
        "get missing -w json",
        "put foo/1 x --ignore-value",
        "put nothing --ignore-value",
        "del missing",
        "del foo/1",
        "del foo --prefix --prev-kv",
        "del zoo -w json",
        "get '' --from-key",
        "put foo again",
        "compaction 3",
        "get foo --rev 2",
        "get foo --rev 3",
        "compaction 3",
        "compaction 100",
        "compaction --physical 12",
        "get foo",
    ] {
        c.cmd(line);
    }
    c.finish();
}

#[tokio::test]
async fn etcdctl_txn() {
    let mut c = CtlPair::start("etcdctl_txn").await;
    c.cmd("put k1 v1");
    c.cmd("put k2 v2");
    let success = "mod(\"k1\") > \"0\"\nvalue(\"k2\") = \"v2\"\n\nput k1 overwritten\nget k2\n\nput k1 created\n\n";
    let failure = "version(\"k1\") = \"7\"\n\nput k3 no\n\nput k3 yes\nget k1 --prefix\ndel k2\n\n";
    let create = "create(\"k9\") = \"0\"\n\nput k9 first\n\n\n";
    for input in [success, failure, create, create] {
        c.cmd_with_input("txn -i", Some(input));
        c.cmd_with_input("txn", Some(input));
        c.cmd_with_input("txn -w json", Some(input));
    }
    c.cmd_with_input("txn", Some("bogus(\"k\") = \"1\"\n\n\n\n"));
    c.cmd_with_input("txn", Some("\nput k1 a\nput k1 b\n\n\n"));
    c.cmd("get k --prefix -w json");
    c.finish();
}

#[tokio::test]
async fn etcdctl_lease_and_cluster() {
    let mut c = CtlPair::start("etcdctl_lease_and_cluster").await;
    for line in [
        "lease list",
        "lease grant 600",
        "put lk lv --lease={lease}",
        "get lk -w json",
        "lease timetolive {lease}",
        "lease timetolive {lease} --keys",
        "lease timetolive {lease} --keys -w json",
        "lease grant 300 -w json",
        "lease list",
        "lease revoke {lease}",
        "lease grant 1",
        "lease revoke {lease}",
        "lease list",
        "lease revoke {lease}",
        "lease timetolive {lease}",
        "put bad v --lease=1234abcd",
        "endpoint status -w json",
        "member list",
        "member list -w json",
        "endpoint health --cluster=false -w json",
    ] {
        c.cmd(line);
    }
    c.finish();
}

/// A background `etcdctl watch` on each side (killed once the last event arrived, or after a
/// deadline), fed puts and deletes through etcdctl; the captured output is compared. Watches
/// start at the next revision (so a slow start replays instead of missing events) and get a
/// head start (so `-w json`, which prints one line per response, sees the same batching).
#[tokio::test]
async fn etcdctl_watch() {
    let mut c = CtlPair::start("etcdctl_watch").await;
    c.cmd("put w/old 0");
    for (n, flags) in [
        "watch w/ --prefix",
        "watch w/ --prefix --prev-kv",
        "watch w/ --prefix -w json",
        "watch w/a",
        "watch w/ --prefix --rev=1",
    ]
    .into_iter()
    .enumerate()
    {
        let next = header_revision(&c.cmd("get w/old -w json").stdout) + 1;
        let flags = if flags.contains("--rev") {
            flags.to_string()
        } else {
            format!("{flags} --rev={next}")
        };
        let a = Watcher::start(&c.oracle, &flags);
        let b = Watcher::start(&c.subject, &flags);
        std::thread::sleep(Duration::from_millis(700));
        for line in [
            "put w/a 1",
            "put w/a 2",
            "del w/a",
            "put w/b x",
            "del w/ --prefix",
        ] {
            c.cmd(line);
        }
        let marker = format!("done{n}");
        c.cmd(&format!("put w/a {marker}"));
        let (oa, ob) = (a.finish(&marker), b.finish(&marker));
        let (ma, mb) = (c.oracle.mask(&oa), c.subject.mask(&ob));
        c.compare(&format!("{flags} (in the background)"), ma, mb);
    }
    c.finish();
}

/// Standard base64 with padding (how etcdctl's JSON shows keys and values).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The header revision in an etcdctl `-w json` answer.
fn header_revision(json: &str) -> i64 {
    let tail = &json[json.find("\"revision\":").expect("revision in json") + 11..];
    let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap()
}

/// `snapshot save` must succeed on both, and both files must pass `snapshot status` with the
/// same revision (both are etcd's format: a bbolt database and its sha256).
#[tokio::test]
async fn etcdctl_snapshot() {
    let mut c = CtlPair::start("etcdctl_snapshot").await;
    c.cmd("put s 1");
    let dir = tempfile::tempdir().unwrap();
    let mut statuses = vec![];
    for (name, side) in [("oracle", &mut c.oracle), (subject_name(), &mut c.subject)] {
        let file = dir.path().join(format!("{}.db", side.server.port));
        let save = side.run(&format!("snapshot save {}", file.display()), None);
        let status = side.run(&format!("snapshot status {} -w json", file.display()), None);
        println!(
            "snapshot on {name}: save exit {} ({} bytes); status exit {}: {}{}",
            save.status,
            std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0),
            status.status,
            status.stdout.trim(),
            status.stderr.trim()
        );
        statuses.push((name, save, status));
    }
    assert_eq!(
        statuses[0].2.status, 0,
        "etcd's own snapshot unreadable: {statuses:?}"
    );
    for (name, save, status) in &statuses {
        assert_eq!(save.status, 0, "snapshot save failed on {name}: {save:?}");
        assert_eq!(
            status.status, 0,
            "snapshot status failed on {name}: {status:?}"
        );
    }
    assert_eq!(
        header_revision(&statuses[0].2.stdout),
        header_revision(&statuses[1].2.stdout),
        "snapshot revisions differ: {statuses:?}"
    );
    c.finish();
}

/// A background `etcdctl watch` collecting its stdout.
struct Watcher {
    child: std::process::Child,
    out: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Watcher {
    fn start(ctl: &Ctl, flags: &str) -> Watcher {
        let mut child = ctl
            .command(&split_args(flags))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl watch");
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Watcher { child, out, reader }
    }

    /// Waits (up to 10 s) until the output shows the last event (its value `marker`, plain or
    /// base64), then kills the watch; returns its output.
    fn finish(mut self, marker: &str) -> Output {
        let encoded = base64(marker.as_bytes());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = self.out.lock().unwrap().clone();
            if out.contains(&format!("\n{marker}\n")) || out.contains(&encoded) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map(|s| s.code().unwrap_or(-1))
            .unwrap_or(-1);
        let _ = self.reader.join();
        let stdout = self.out.lock().unwrap().clone();
        Output {
            status: if status == -1 { 0 } else { status },
            stdout,
            stderr: String::new(),
        }
    }
}

#[test]
fn masking_helpers() {
    assert_eq!(base64(b"done"), "ZG9uZQ==");
    assert_eq!(base64(b"done1"), "ZG9uZTE=");
    assert_eq!(base64(b"w/a"), "dy9h");
    assert_eq!(
        split_args("get '' --from-key \"a b\""),
        ["get", "", "--from-key", "a b"]
    );
    assert_eq!(
        replace_token("id 12 123 x12", "12", "<n>"),
        "id <n> 123 x12"
    );
    assert_eq!(
        mask_json_value("{\"ts\":\"2026\",\"raft_term\":2}", "raft_term"),
        "{\"ts\":\"2026\",\"raft_term\":<raft_term>}"
    );
    assert_eq!(
        mask_json_string("\"version\":\"3.4.23\",\"version\":2", "version"),
        "\"version\":\"<version>\",\"version\":2"
    );
}
