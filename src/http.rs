//! The metrics listener (`--metrics`, `--metrics-listen`, etcd's `--listen-metrics-urls`): a
//! small plain-HTTP/1.1 server with
//!
//! - `/metrics`: every metric in Prometheus's text format (see `crate::metrics`);
//! - `/health` and `/readyz`: etcd's health answer, `{"health":"true","reason":""}` with HTTP
//!   200, or `{"health":"false","reason":"..."}` with HTTP 503 while an alarm is active
//!   (`ALARM NOSPACE`), no leader is known (`RAFT NO LEADER`) or a linearizable read cannot
//!   complete (`QGET ERROR`). As in etcd, `?exclude=NOSPACE` ignores an alarm and
//!   `?serializable=true` skips the read;
//! - `/livez`: 200 while the member runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::metrics::metrics;
use crate::node::Node;
use crate::proto::etcdserverpb::AlarmType;
use crate::server::ListenAddr;

/// Binds every metrics listener of the configuration (failing fast when one cannot be bound)
/// and serves each until `shutdown` turns true.
pub async fn start(
    node: Arc<Node>,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>> {
    let mut tasks = vec![];
    for url in node.config.metrics_addresses() {
        let addr = match ListenAddr::parse(&url)? {
            ListenAddr::Tcp(a) if !url.starts_with("https://") => a,
            _ => {
                return Err(Error::Config(format!(
                    "metrics listener {url:?}: metrics are served over plain HTTP on TCP \
                     (http://HOST:PORT or HOST:PORT)"
                )))
            }
        };
        let sock: SocketAddr = tokio::net::lookup_host(&addr)
            .await?
            .next()
            .ok_or_else(|| Error::Config(format!("cannot resolve {addr}")))?;
        let listener = TcpListener::bind(sock)
            .await
            .map_err(|e| Error::Config(format!("metrics listener {sock}: {e}")))?;
        tracing::info!(
            "serving metrics and health on http://{}",
            listener.local_addr()?
        );
        tasks.push(tokio::spawn(accept_loop(
            listener,
            node.clone(),
            shutdown.clone(),
        )));
    }
    Ok(tasks)
}

async fn accept_loop(listener: TcpListener, node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("metrics listener: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let node = node.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(handle(&node, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("metrics connection: {e}");
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

async fn handle(node: &Node, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "Method Not Allowed\n",
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let m = metrics();
            m.refresh(node);
            match m.encode() {
                Ok(text) => respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                ),
                Err(e) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    format!("{e}\n"),
                ),
            }
        }
        "/health" | "/readyz" => {
            let (healthy, reason) = health(node, req.uri().query().unwrap_or("")).await;
            let body = json!({
                "health": if healthy { "true" } else { "false" },
                "reason": reason,
            });
            let status = if healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(status, "application/json", body.to_string())
        }
        "/livez" => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "404 page not found\n",
        ),
    }
}

/// etcd's health check: alarms (unless excluded), a known leader, then a linearizable read
/// (unless `serializable=true`). Returns whether healthy and etcd's reason text.
pub async fn health(node: &Node, query: &str) -> (bool, String) {
    let mut excluded = vec![];
    let mut serializable = false;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("exclude", alarm)) => excluded.push(alarm.to_ascii_uppercase()),
            Some(("serializable", value)) => serializable = value == "true",
            _ => {}
        }
    }
    match node.store.alarms() {
        Ok(alarms) => {
            for (_, alarm) in alarms {
                let name = AlarmType::try_from(alarm)
                    .map(|a| a.as_str_name())
                    .unwrap_or("UNKNOWN");
                if !excluded.iter().any(|e| e == name) {
                    return (false, format!("ALARM {name}"));
                }
            }
        }
        Err(e) => return (false, format!("ALARM LIST ERROR: {e}")),
    }
    if !node.raft_status().has_leader() {
        return (false, "RAFT NO LEADER".into());
    }
    if !serializable {
        if let Err(e) = node.read_barrier().await {
            return (false, format!("QGET ERROR: {e}"));
        }
    }
    (true, String::new())
}
