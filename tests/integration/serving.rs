//! Serving (raftkine only): unix socket listeners (reached with etcd-client over a tonic
//! channel dialing the socket), the MicroK8s socket name, several listeners at once, listen URL
//! forms and --log-level.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Client, GetOptions};

use crate::common::*;
use crate::support::{free_port, Server};

/// An etcd-client whose channel dials a unix socket.
async fn unix_client(path: &Path) -> Client {
    let path: PathBuf = path.to_path_buf();
    let mut last = None;
    for _ in 0..100 {
        let p = path.clone();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let p = p.clone();
            async move {
                let s = tokio::net::UnixStream::connect(p).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        });
        match tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(connector)
            .await
        {
            Ok(ch) => {
                return Client::from_channel(etcd_client::Channel::Tonic(ch), None)
                    .await
                    .unwrap()
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("cannot dial {}: {last:?}", path.display())
}

#[tokio::test]
async fn unix_socket_listener() {
    if skip_on_etcd("unix_socket_listener") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("raftkine.sock");
    let listen = format!("unix://{}", sock.display());
    let s = Server::raftkine_with(&["--listen", &listen]);
    let mut uc = unix_client(&sock).await;
    let rev = put(&mut uc, "via-unix", "1").await;
    // Same store on the TCP listener.
    let mut tc = s.client().await;
    let g = tc.get("via-unix", None).await.unwrap();
    assert_eq!(values_of(g.kvs()), ["1"]);
    assert_eq!(g.kvs()[0].mod_revision(), rev);
    // Watches work over the socket too.
    let mut w = uc.watch("w", None).await.unwrap();
    let id = expect_created(&mut w).await;
    let r = put(&mut tc, "w", "x").await;
    let got: Vec<_> = next_events(&mut w, id, 1).await.iter().map(ev).collect();
    assert_eq!(got, [put_ev("w", "x", r)]);
}

/// etcdctl 3.4 over a unix socket sends the socket path as HTTP/2 `:authority` (and the whole
/// URL on maintenance calls over TCP); both must work, as they do against etcd.
#[tokio::test]
async fn etcdctl_over_unix_socket_and_http_urls() {
    if skip_on_etcd("etcdctl_over_unix_socket_and_http_urls") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix://{}/kine.sock:12379", dir.path().display());
    let s = Server::raftkine_with(&["--listen", &listen]);
    let etcdctl = |endpoint: String, args: &[&str]| {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .output()
            .expect("etcdctl runs");
        assert!(
            out.status.success(),
            "etcdctl {args:?} on {endpoint}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let unix = format!("unix://{}/kine.sock:12379", dir.path().display());
    etcdctl(unix.clone(), &["put", "via-etcdctl", "1"]);
    assert_eq!(
        etcdctl(unix.clone(), &["get", "via-etcdctl", "--print-value-only"]),
        "1\n"
    );
    assert!(etcdctl(unix, &["endpoint", "status"]).contains("3.5.13"));
    for args in [
        &["endpoint", "status"][..],
        &["defrag"],
        &["alarm", "list"],
        &["endpoint", "hashkv"],
    ] {
        etcdctl(s.endpoint.clone(), args);
    }
}

#[tokio::test]
async fn microk8s_socket_name_with_port_suffix() {
    if skip_on_etcd("microk8s_socket_name_with_port_suffix") {
        return;
    }
    // k8s-dqlite splits the listen URL only on "://": the socket file is literally
    // named `kine.sock:12379`, and kube-apiserver dials that path.
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix://{}/kine.sock:12379", dir.path().display());
    let _s = Server::raftkine_with(&["--listen", &listen]);
    let sock = dir.path().join("kine.sock:12379");
    let mut uc = unix_client(&sock).await;
    assert!(sock.exists(), "socket file {} missing", sock.display());
    put(&mut uc, "k", "v").await;
    assert_eq!(uc.get("k", None).await.unwrap().count(), 1);
}

#[tokio::test]
async fn several_tcp_listeners_and_url_forms() {
    if skip_on_etcd("several_tcp_listeners_and_url_forms") {
        return;
    }
    let p2 = free_port();
    let p3 = free_port();
    let l2 = format!("tcp://127.0.0.1:{p2}");
    let l3 = format!("http://127.0.0.1:{p3}"); // etcd's --listen-client-urls style
    let s = Server::raftkine_with(&["--listen", &l2, "--listen", &l3]);
    let mut c1 = s.client().await;
    let connect = |port: u16| async move {
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if let Ok(c) = Client::connect([url.as_str()], None).await {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("cannot connect to {url}")
    };
    let mut c2 = connect(p2).await;
    let mut c3 = connect(p3).await;
    put(&mut c1, "one", "1").await;
    put(&mut c2, "two", "2").await;
    let rev = put(&mut c3, "three", "3").await;
    for c in [&mut c1, &mut c2, &mut c3] {
        let g = c
            .get("", Some(GetOptions::new().with_all_keys()))
            .await
            .unwrap();
        assert_eq!(keys_of(g.kvs()), ["one", "three", "two"]);
        assert_eq!(hrev(g.header()), rev);
    }
}

#[tokio::test]
async fn log_level_flag() {
    if skip_on_etcd("log_level_flag") {
        return;
    }
    let s = Server::raftkine_with(&["--log-level", "debug"]);
    let mut c = s.client().await;
    put(&mut c, "k", "v").await;
    let s = Server::raftkine_with(&["--log-level", "error"]);
    let mut c = s.client().await;
    put(&mut c, "k", "v").await;
}

#[tokio::test]
async fn first_requests_after_start_are_served() {
    // As soon as the client port accepts connections, reads, writes and hasleader watches
    // are answered (etcd serves clients only once it has a leader). Runs on both targets.
    let s = Server::under_test();
    let mut c = s.client().await;
    let t = Duration::from_secs(3);
    let g = tokio::time::timeout(t, c.get("k", None))
        .await
        .expect("first read not answered within 3 s")
        .expect("first read failed");
    assert_eq!(hrev(g.header()), 1);
    let mut lc = Client::connect(
        [s.endpoint.as_str()],
        Some(etcd_client::ConnectOptions::new().with_require_leader(true)),
    )
    .await
    .unwrap();
    let mut w = tokio::time::timeout(t, lc.watch("k", None))
        .await
        .expect("hasleader watch not answered within 3 s")
        .expect("hasleader watch refused right after start");
    expect_created(&mut w).await;
    tokio::time::timeout(t, c.put("k", "v", None))
        .await
        .expect("first write not answered within 3 s")
        .expect("first write failed");
}
