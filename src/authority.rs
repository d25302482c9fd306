//! Repairs the HTTP/2 `:authority` of clients that send an invalid one, before the HTTP/2 server
//! (h2, which refuses such requests) sees it.
//!
//! etcdctl 3.4 (grpc-go of its day) sends the endpoint as given: `http://127.0.0.1:2379` on its
//! maintenance connections, and a socket path (`/run/kine.sock:12379`) on unix sockets. etcd's
//! Go server ignores the header; h2 answers PROTOCOL_ERROR. This stream wrapper looks at the
//! first request of a plaintext connection: when its authority is valid (every modern client)
//! the connection is passed through untouched; otherwise every header block of the connection is
//! decoded, its authority replaced by a valid one, and re-encoded (HPACK keeps per-connection
//! state, so once one block is rewritten, all of them must be).

use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http2_frame::{
    FrameHeader, CLIENT_PREFACE_LEN, CONTINUATION, END_HEADERS, END_STREAM, HEADERS, HEADER_LEN,
    PADDED, PRIORITY,
};

/// The largest frame a peer may send before the server raises SETTINGS_MAX_FRAME_SIZE.
const MAX_FRAME: usize = 16_384;

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Waiting for the connection preface and the first header block.
    Inspect,
    Passthrough,
    Rewrite,
}

/// A header block being collected from HEADERS + CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
    /// The original frames, re-emitted as they were if nothing needs rewriting.
    raw: BytesMut,
}

/// A client connection whose header blocks get a valid `:authority`.
pub struct FixAuthority<S> {
    inner: S,
    mode: Mode,
    preface_seen: bool,
    input: BytesMut,
    output: BytesMut,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    eof: bool,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S) -> FixAuthority<S> {
        FixAuthority {
            inner,
            mode: Mode::Inspect,
            preface_seen: false,
            input: BytesMut::new(),
            output: BytesMut::new(),
            block: None,
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves every complete frame from `input` to `output`, rewriting header blocks as needed.
    fn process(&mut self) -> io::Result<()> {
        if !self.preface_seen {
            if self.input.len() < CLIENT_PREFACE_LEN {
                return Ok(());
            }
            self.output.put(self.input.split_to(CLIENT_PREFACE_LEN));
            self.preface_seen = true;
        }
        while self.mode != Mode::Passthrough && self.input.len() >= HEADER_LEN {
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&self.input[..HEADER_LEN]);
            let FrameHeader {
                len,
                kind,
                flags,
                stream,
            } = FrameHeader::parse(&header);
            if self.input.len() < HEADER_LEN + len {
                return Ok(());
            }
            let frame = self.input.split_to(HEADER_LEN + len);
            match kind {
                HEADERS => {
                    let mut payload = &frame[HEADER_LEN..];
                    let mut pad = 0usize;
                    if flags & PADDED != 0 && !payload.is_empty() {
                        pad = payload[0] as usize;
                        payload = &payload[1..];
                    }
                    let mut priority = None;
                    if flags & PRIORITY != 0 && payload.len() >= 5 {
                        let mut p = [0u8; 5];
                        p.copy_from_slice(&payload[..5]);
                        priority = Some(p);
                        payload = &payload[5..];
                    }
                    let fragment = &payload[..payload.len().saturating_sub(pad)];
                    self.block = Some(Block {
                        stream,
                        end_stream: flags & END_STREAM != 0,
                        priority,
                        fragment: BytesMut::from(fragment),
                        raw: frame.clone(),
                    });
                    if flags & END_HEADERS != 0 {
                        self.finish_block()?;
                    }
                }
                CONTINUATION if self.block.is_some() => {
                    if let Some(block) = self.block.as_mut() {
                        block.fragment.extend_from_slice(&frame[HEADER_LEN..]);
                        block.raw.extend_from_slice(&frame);
                    }
                    if flags & END_HEADERS != 0 {
                        self.finish_block()?;
                    }
                }
                _ => self.output.extend_from_slice(&frame),
            }
        }
        if self.mode == Mode::Passthrough {
            let rest = self.input.split();
            self.output.extend_from_slice(&rest);
        }
        Ok(())
    }

    fn finish_block(&mut self) -> io::Result<()> {
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        let headers = self
            .decoder
            .decode(&block.fragment)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("HPACK: {e:?}")))?;
        if self.mode == Mode::Inspect {
            let valid = headers
                .iter()
                .find(|(n, _)| n == b":authority")
                .is_none_or(|(_, v)| authority_is_valid(v));
            if valid {
                // The client's encoder and the server's decoder stay in step: step aside.
                self.output.extend_from_slice(&block.raw);
                self.mode = Mode::Passthrough;
                return Ok(());
            }
            self.mode = Mode::Rewrite;
        }
        let fixed: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .map(|(n, v)| {
                if n == b":authority" {
                    let v = repair_authority(&v);
                    (n, v)
                } else {
                    (n, v)
                }
            })
            .collect();
        let encoded = self
            .encoder
            .encode(fixed.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        self.emit_block(&block, &encoded);
        Ok(())
    }

    /// Writes a header block as one HEADERS frame plus CONTINUATION frames when it is large.
    fn emit_block(&mut self, block: &Block, encoded: &[u8]) {
        let prio_len = if block.priority.is_some() { 5 } else { 0 };
        let first = encoded.len().min(MAX_FRAME - prio_len);
        let (head, mut rest) = encoded.split_at(first);
        let mut flags = if block.end_stream { END_STREAM } else { 0 };
        if block.priority.is_some() {
            flags |= PRIORITY;
        }
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        put_frame_header(
            &mut self.output,
            head.len() + prio_len,
            HEADERS,
            flags,
            block.stream,
        );
        if let Some(p) = block.priority {
            self.output.extend_from_slice(&p);
        }
        self.output.extend_from_slice(head);
        while !rest.is_empty() {
            let n = rest.len().min(MAX_FRAME);
            let (chunk, tail) = rest.split_at(n);
            let flags = if tail.is_empty() { END_HEADERS } else { 0 };
            put_frame_header(&mut self.output, n, CONTINUATION, flags, block.stream);
            self.output.extend_from_slice(chunk);
            rest = tail;
        }
    }
}

fn put_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    let header = FrameHeader {
        len,
        kind,
        flags,
        stream,
    };
    out.extend_from_slice(&header.encode());
}

fn authority_is_valid(value: &[u8]) -> bool {
    std::str::from_utf8(value)
        .ok()
        .is_some_and(|s| http::uri::Authority::from_str(s).is_ok())
}

/// `http://h:p` → `h:p`; anything else unusable (a socket path) → `localhost`.
fn repair_authority(value: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(value);
    let without_scheme = text
        .split_once("://")
        .map_or(text.as_ref(), |(_, rest)| rest);
    let host = without_scheme.split('/').next().unwrap_or_default();
    if !host.is_empty() && authority_is_valid(host.as_bytes()) {
        host.as_bytes().to_vec()
    } else {
        b"localhost".to_vec()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Passthrough && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    if read.filled().is_empty() {
                        this.eof = true;
                        // Whatever is left unparsed goes on as it is.
                        let rest = this.input.split();
                        this.output.extend_from_slice(&rest);
                    } else {
                        this.input.extend_from_slice(read.filled());
                        this.process()?;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for FixAuthority<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_are_repaired() {
        assert_eq!(
            repair_authority(b"http://127.0.0.1:2379"),
            b"127.0.0.1:2379"
        );
        assert_eq!(
            repair_authority(b"unix:///run/kine.sock:12379"),
            b"localhost"
        );
        assert_eq!(repair_authority(b"/run/kine.sock:12379"), b"localhost");
        assert!(authority_is_valid(b"127.0.0.1:2379"));
        assert!(!authority_is_valid(b"http://127.0.0.1:2379"));
    }
}
