//! A lean gRPC client for the etcd calls of the load scenarios: one HTTP/2 connection (the `h2`
//! crate) per `--conns`, each message encoded with prost and framed by hand; unary calls and
//! bidirectional streams (watch). The connection's writes are coalesced as the server's are (see
//! `raftkine::coalesce`): the requests of many clients that are ready together leave in one write.
//!
//! Why not the `etcd-client` crate for these: its channel puts a load balancer and a buffer
//! task in front of every request, so the load tool spent more CPU per request than the
//! servers it measures (65 µs against raftkine's 50 µs for a serializable get at 1000 clients)
//! on the same two cores, which flattens every ratio towards 1. This client costs a fraction of
//! that; both servers are measured with it alike. Lease keep-alive streams and the
//! Kubernetes-shaped scenarios still use `etcd-client`.

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Method, Request, Uri};
use prost::Message;
use raftkine::coalesce::Coalesce;
use tokio::net::TcpStream;

/// etcd's KV service methods, as gRPC paths.
pub mod path {
    pub const RANGE: &str = "/etcdserverpb.KV/Range";
    pub const PUT: &str = "/etcdserverpb.KV/Put";
    pub const TXN: &str = "/etcdserverpb.KV/Txn";
    pub const WATCH: &str = "/etcdserverpb.Watch/Watch";
}

/// One HTTP/2 connection to a server; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct GrpcConn {
    send: SendRequest<Bytes>,
    authority: http::uri::Authority,
}

/// A failed call: the gRPC status code and message when the server answered with one.
#[derive(Debug)]
pub struct Status {
    pub code: u32,
    pub message: String,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gRPC status {}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

impl GrpcConn {
    /// Connects to `endpoint` (`HOST:PORT` or `http://HOST:PORT`).
    pub async fn connect(endpoint: &str) -> Result<GrpcConn> {
        let address = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let tcp = TcpStream::connect(&address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        tcp.set_nodelay(true)?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake::<_, Bytes>(Coalesce::client(tcp))
            .await
            .with_context(|| format!("HTTP/2 handshake with {address}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(GrpcConn {
            send,
            authority: address.parse().context("endpoint address")?,
        })
    }

    fn head(&self, path: &'static str) -> Result<Request<()>> {
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()?;
        Ok(Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?)
    }

    /// Opens a bidirectional stream to the method at `path`. (The answer's headers are awaited
    /// with the first message: some servers send them only with their first message.)
    pub async fn bidi(&self, path: &'static str) -> Result<BidiStream> {
        let head = self.head(path)?;
        let mut send = self.send.clone().ready().await?;
        let (response, out) = send.send_request(head, false)?;
        Ok(BidiStream {
            out,
            body: Incoming::Pending(response),
            buf: BytesMut::new(),
        })
    }

    /// One unary call: `request` to the method at `path`, its answer decoded.
    pub async fn unary<Q: Message, R: Message + Default>(
        &self,
        path: &'static str,
        request: &Q,
    ) -> Result<R> {
        let head = self.head(path)?;
        let mut send = self.send.clone().ready().await?;
        let (response, mut body_out) = send.send_request(head, false)?;
        body_out.send_data(frame(request), true)?;
        let response = response.await?;
        let (parts, mut body) = response.into_parts();
        if !parts.status.is_success() {
            bail!("HTTP status {}", parts.status);
        }
        // A "trailers-only" answer carries the gRPC status in its headers.
        check_status(&parts.headers)?;
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        match body.trailers().await? {
            Some(trailers) => check_status(&trailers)?,
            None if parts.headers.contains_key("grpc-status") => {}
            None => bail!("the answer has no gRPC status"),
        }
        unframe(data.freeze())
    }
}

/// A bidirectional gRPC stream: messages out, messages in.
pub struct BidiStream {
    out: SendStream<Bytes>,
    body: Incoming,
    /// Received bytes not yet made into messages.
    buf: BytesMut,
}

/// The answer of a stream: awaited, or not yet.
enum Incoming {
    Pending(h2::client::ResponseFuture),
    Open(RecvStream),
}

impl BidiStream {
    /// Sends one message.
    pub fn send<M: Message>(&mut self, message: &M) -> Result<()> {
        self.out.send_data(frame(message), false)?;
        Ok(())
    }

    /// The next message, or None when the server ended the stream (with an OK status).
    pub async fn message<M: Message + Default>(&mut self) -> Result<Option<M>> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() >= 5 + len {
                    let message = self.buf.split_to(5 + len).freeze();
                    return unframe(message).map(Some);
                }
            }
            let body = match &mut self.body {
                Incoming::Open(body) => body,
                Incoming::Pending(response) => {
                    let (parts, body) = response.await?.into_parts();
                    if !parts.status.is_success() {
                        bail!("HTTP status {}", parts.status);
                    }
                    check_status(&parts.headers)?;
                    self.body = Incoming::Open(body);
                    continue;
                }
            };
            match body.data().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let _ = body.flow_control().release_capacity(chunk.len());
                    self.buf.extend_from_slice(&chunk);
                }
                None => {
                    if let Some(trailers) = body.trailers().await? {
                        check_status(&trailers)?;
                    }
                    return Ok(None);
                }
            }
        }
    }
}

/// A message with gRPC's 5-byte prefix (uncompressed, big-endian length).
fn frame<M: Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Encoding into a buffer of exactly the right capacity cannot fail.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// The one message of a unary answer.
fn unframe<M: Message + Default>(mut data: Bytes) -> Result<M> {
    if data.len() < 5 {
        bail!("answer of {} bytes has no gRPC message", data.len());
    }
    if data.get_u8() != 0 {
        bail!("compressed answers are not supported");
    }
    let len = data.get_u32() as usize;
    if data.len() < len {
        bail!("answer cut short: {} of {len} bytes", data.len());
    }
    Ok(M::decode(data.split_to(len))?)
}

/// An error for a non-zero `grpc-status`.
fn check_status(headers: &HeaderMap) -> Result<()> {
    let Some(code) = headers.get("grpc-status") else {
        return Ok(());
    };
    let code: u32 = code
        .to_str()
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad grpc-status {code:?}"))?;
    if code == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Err(Status { code, message }.into())
}

/// grpc-message is percent-encoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkine::proto::etcdserverpb::RangeRequest;

    #[test]
    fn a_framed_message_unframes_to_itself() {
        let request = RangeRequest {
            key: b"/registry/pods/a".to_vec(),
            limit: 500,
            ..Default::default()
        };
        let framed = frame(&request);
        assert_eq!(framed[0], 0);
        assert_eq!(
            u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize,
            framed.len() - 5
        );
        let back: RangeRequest = unframe(framed).unwrap();
        assert_eq!(back, request);
        assert!(unframe::<RangeRequest>(Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
    }

    #[test]
    fn a_non_zero_grpc_status_is_an_error_with_its_decoded_message() {
        let mut headers = HeaderMap::new();
        assert!(check_status(&headers).is_ok());
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(check_status(&headers).is_ok());
        headers.insert("grpc-status", "11".parse().unwrap());
        headers.insert(
            "grpc-message",
            "etcdserver:%20mvcc:%20required%20revision%20is%20a%20future%20revision"
                .parse()
                .unwrap(),
        );
        let e = check_status(&headers).unwrap_err();
        let status = e.downcast_ref::<Status>().unwrap();
        assert_eq!(status.code, 11);
        assert_eq!(
            status.message,
            "etcdserver: mvcc: required revision is a future revision"
        );
    }
}
