//! Helpers shared by the integration test modules.
#![allow(dead_code)]

use std::time::Duration;

use etcd_client::{Client, Event, EventType, WatchResponse, WatchStream};
use tonic::Code;

use crate::support::{Kind, Server};

/// A fresh server under test and a client connected to it.
pub async fn start() -> (Server, Client) {
    let server = Server::under_test();
    let client = server.client().await;
    (server, client)
}

pub fn is_etcd(server: &Server) -> bool {
    server.kind == Kind::Etcd
}

/// True (after printing a note) when the target is etcd and the test needs raftkine.
pub fn skip_on_etcd(test: &str) -> bool {
    if std::env::var("RAFTKINE_TEST_TARGET").as_deref() == Ok("etcd") {
        eprintln!("{test}: skipped, raftkine-only feature (target is etcd)");
        return true;
    }
    false
}

/// The gRPC status carried by an etcd-client error.
pub fn status_of(e: etcd_client::Error) -> tonic::Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status error, got {other:?}"),
    }
}

/// Asserts that `r` failed with exactly this gRPC code and message.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    r: Result<T, etcd_client::Error>,
    code: Code,
    message: &str,
) {
    let s = status_of(r.expect_err("expected an error"));
    assert_eq!(s.code(), code, "wrong code in {s:?}");
    assert_eq!(s.message(), message, "wrong message in {s:?}");
}

/// The revision of a response header.
pub fn hrev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.expect("response without header").revision()
}

/// Current store revision (a Range on an unused key).
pub async fn current_rev(c: &mut Client) -> i64 {
    hrev(c.get("\u{1}no-such-key", None).await.unwrap().header())
}

/// Puts and returns the revision of the write.
pub async fn put(c: &mut Client, k: &str, v: &str) -> i64 {
    hrev(c.put(k, v, None).await.unwrap().header())
}

/// The end of the range of keys starting with `prefix` (clientv3.GetPrefixRangeEnd).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub fn keys_of(kvs: &[etcd_client::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect()
}

pub fn values_of(kvs: &[etcd_client::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| kv.value_str().unwrap().to_string())
        .collect()
}

pub const WAIT: Duration = Duration::from_secs(10);

/// The next message of a watch stream (panics after 10 s or when the stream ends).
pub async fn next_resp(w: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(WAIT, w.message())
        .await
        .expect("no watch response within 10 s")
        .expect("watch stream error")
        .expect("watch stream ended")
}

/// Reads the creation response of a watch and returns its watch id.
pub async fn expect_created(w: &mut WatchStream) -> i64 {
    let r = next_resp(w).await;
    assert!(r.created(), "expected a created response, got {r:?}");
    assert!(!r.canceled(), "watch was canceled at creation: {r:?}");
    assert!(r.events().is_empty());
    r.watch_id()
}

/// Collects exactly `n` events (from one or more responses, all for `watch_id`).
pub async fn next_events(w: &mut WatchStream, watch_id: i64, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        let r = next_resp(w).await;
        assert!(
            !r.canceled(),
            "watch canceled while waiting for events: {r:?}"
        );
        if r.events().is_empty() {
            continue; // progress notification
        }
        assert_eq!(
            r.watch_id(),
            watch_id,
            "events for an unexpected watch: {r:?}"
        );
        out.extend(r.events().iter().cloned());
    }
    assert_eq!(out.len(), n, "more events than expected: {out:?}");
    out
}

/// Asserts that the stream delivers nothing (but maybe empty progress responses) for `d`.
pub async fn expect_silence(w: &mut WatchStream, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, w.message()).await {
            Err(_) => return,
            Ok(Ok(Some(r))) if r.events().is_empty() && !r.canceled() && !r.created() => {}
            Ok(other) => panic!("expected no watch message, got {other:?}"),
        }
    }
}

/// (type, key, value, mod_revision) of an event, for compact assertions.
pub fn ev(e: &Event) -> (EventType, String, String, i64) {
    let kv = e.kv().expect("event without kv");
    (
        e.event_type(),
        kv.key_str().unwrap().to_string(),
        kv.value_str().unwrap().to_string(),
        kv.mod_revision(),
    )
}

pub fn put_ev(k: &str, v: &str, rev: i64) -> (EventType, String, String, i64) {
    (EventType::Put, k.to_string(), v.to_string(), rev)
}

pub fn del_ev(k: &str, rev: i64) -> (EventType, String, String, i64) {
    (EventType::Delete, k.to_string(), String::new(), rev)
}

/// An etcd process started with extra flags (for behaviour `support::Server::etcd()` cannot
/// configure: TLS, progress-notify interval). Killed on drop.
pub struct EtcdProcess {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl EtcdProcess {
    /// `scheme` is `http` or `https` for the client URL.
    pub fn start(scheme: &str, extra: &[String]) -> EtcdProcess {
        use crate::support::free_port;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let peer = free_port();
        let child = std::process::Command::new("etcd")
            .args(["--name", "default", "--log-level", "error"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(format!("{scheme}://127.0.0.1:{port}"))
            .arg("--advertise-client-urls")
            .arg(format!("{scheme}://127.0.0.1:{port}"))
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{peer}"))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{peer}"))
            .arg("--initial-cluster")
            .arg(format!("default=http://127.0.0.1:{peer}"))
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start etcd");
        let mut child = child;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        if let Err(e) = crate::support::listening::wait_until_serving(&mut child, port, deadline) {
            panic!("etcd on port {port} is not serving: {e:?}");
        }
        EtcdProcess {
            child,
            _dir: dir,
            port,
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Either server kind, started with flags of its own (see `EtcdProcess`).
pub enum AnyServer {
    Raftkine(Server),
    Etcd(EtcdProcess),
}

impl AnyServer {
    /// raftkine with `raftkine_args`, or (target etcd) etcd with `etcd_args` on `scheme`.
    pub fn start(raftkine_args: &[&str], etcd_args: &[String], scheme: &str) -> AnyServer {
        if std::env::var("RAFTKINE_TEST_TARGET").as_deref() == Ok("etcd") {
            AnyServer::Etcd(EtcdProcess::start(scheme, etcd_args))
        } else {
            AnyServer::Raftkine(Server::raftkine_with(raftkine_args))
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            AnyServer::Raftkine(s) => s.port,
            AnyServer::Etcd(e) => e.port,
        }
    }

    /// A plain-text client (retrying until the server answers).
    pub async fn client(&self) -> Client {
        let url = format!("http://127.0.0.1:{}", self.port());
        let mut last = None;
        for _ in 0..100 {
            match Client::connect([url.as_str()], None).await {
                Ok(c) => return c,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot connect to {url}: {last:?}")
    }
}
