//! Coalesces the writes of an HTTP/2 connection: the gRPC messages that become ready at about
//! the same moment leave in one write instead of one each.
//!
//! hyper answers every gRPC call from its own task. Each task that finishes an answer wakes the
//! connection task, and tokio runs the woken connection task next, before the other finished
//! calls, so every answer (often its trailers separately) was a system call and, on loopback, a
//! TCP segment processed on the server's CPU twice: 1.6 writes per unary call at 1000 clients.
//!
//! Here the bytes of a flush are held while more are on their way, and the flush yields once
//! to the back of the scheduler's queue (where the tasks finishing those bytes are) before it
//! writes everything held. What "on their way" means depends on the side:
//! - a server: more than one request the peer has finished sending is not answered yet (a
//!   yield costs about what the write it saves costs, so waiting for a single answer does not
//!   pay);
//! - a client (the load tool): more than one answer arrived since the last write, so several
//!   callers were woken and their next requests are coming.
//!
//! A server also holds the start of an answer (its headers and message) for its end: h2 hands a
//! unary answer's trailers over only after the connection took the message, so they left in a
//! second write, and a client woken by the message alone had to be woken again for them (a
//! 1-client get with a 256-byte value: two writes per get, and 12–20 % fewer gets per second).
//! That flush reports done without writing and without a yield; the trailers' arrival brings
//! the next flush, or a 1 ms timer does if they are slow to come (a streamed answer). Only
//! answers wait so: when other streams' bytes are held too (a watch's events on the same
//! connection), the flush writes as before (holding those cost the watch row 8 %).
//!
//! Otherwise, with one call at a time nothing waits. The rules come from the frame headers of
//! the bytes read and written, so the wrapper must see plaintext HTTP/2 (under TLS it is not
//! used).

use std::collections::HashSet;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http2_frame::{
    FrameHeader, CLIENT_PREFACE_LEN, DATA, END_STREAM, HEADERS, HEADER_LEN, RST_STREAM,
};

/// Bytes held before a write must reach the socket; larger writes go straight through.
const HOLD_LIMIT: usize = 64 * 1024;

/// How long the start of an answer may wait for its end before it is written alone.
const ANSWER_END_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// What a frame does to its stream, as far as coalescing cares.
#[derive(Debug, PartialEq, Eq)]
enum StreamEvent {
    /// HEADERS or DATA without END_STREAM: the sender has more to send on the stream.
    Continued(u32),
    /// HEADERS or DATA with END_STREAM: the sender has finished its side.
    Ended(u32),
    /// RST_STREAM: the stream is gone.
    Reset(u32),
}

/// Finds the frame headers in one direction of a connection's bytes.
#[derive(Default)]
struct FrameScanner {
    /// Bytes still to skip: the rest of the current frame's payload (or of the preface).
    skip: usize,
    header: [u8; HEADER_LEN],
    header_len: usize,
}

impl FrameScanner {
    fn skipping(skip: usize) -> FrameScanner {
        FrameScanner {
            skip,
            ..FrameScanner::default()
        }
    }

    fn scan(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(StreamEvent)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == HEADER_LEN {
                let header = FrameHeader::parse(&self.header);
                match header.kind {
                    DATA | HEADERS if header.flags & END_STREAM != 0 => {
                        on_event(StreamEvent::Ended(header.stream))
                    }
                    DATA | HEADERS => on_event(StreamEvent::Continued(header.stream)),
                    RST_STREAM => on_event(StreamEvent::Reset(header.stream)),
                    _ => {}
                }
                self.skip = header.len;
                self.header_len = 0;
            }
        }
    }
}

/// Which side of the connection this is, with the state its rule needs.
enum Side {
    /// Requests the client has finished sending and the server has not answered to the end;
    /// those of them whose answer has begun (its trailers follow at once: tonic writes a
    /// unary answer's headers and message first, and h2 hands its trailers over only once
    /// the connection has written those); and streams the server ended before the client
    /// did (an early answer), whose ending by the client must not count as a new request.
    /// `others_held`: bytes of other streams (a watch's events) are held since the last write,
    /// and those must not wait for an answer's end.
    Server {
        unanswered: HashSet<u32>,
        answering: HashSet<u32>,
        answered_early: HashSet<u32>,
        others_held: bool,
    },
    /// Answers that ended since the last write.
    Client { answered: usize },
}

impl Side {
    fn read(&mut self, event: StreamEvent) {
        match (self, event) {
            (
                Side::Server {
                    unanswered,
                    answered_early,
                    ..
                },
                StreamEvent::Ended(id),
            ) => {
                if !answered_early.remove(&id) {
                    unanswered.insert(id);
                }
            }
            (
                Side::Server {
                    unanswered,
                    answering,
                    answered_early,
                    ..
                },
                StreamEvent::Reset(id),
            ) => {
                unanswered.remove(&id);
                answering.remove(&id);
                answered_early.remove(&id);
            }
            (Side::Client { answered }, StreamEvent::Ended(_)) => *answered += 1,
            (_, StreamEvent::Continued(_)) | (Side::Client { .. }, StreamEvent::Reset(_)) => {}
        }
    }

    fn written(&mut self, event: StreamEvent) {
        if let Side::Server {
            unanswered,
            answering,
            answered_early,
            others_held,
        } = self
        {
            match event {
                StreamEvent::Continued(id) => {
                    if unanswered.contains(&id) {
                        answering.insert(id);
                    } else {
                        *others_held = true;
                    }
                }
                StreamEvent::Ended(id) => {
                    answering.remove(&id);
                    if !unanswered.remove(&id) {
                        answered_early.insert(id);
                        *others_held = true;
                    }
                }
                StreamEvent::Reset(id) => {
                    unanswered.remove(&id);
                    answering.remove(&id);
                    answered_early.remove(&id);
                    *others_held = true;
                }
            }
        }
    }

    fn more_is_coming(&self) -> bool {
        match self {
            Side::Server { unanswered, .. } => unanswered.len() > 1,
            Side::Client { answered } => *answered > 1,
        }
    }

    /// A server's answer to a finished request has begun and not ended, and nothing else
    /// held is in a hurry.
    fn answer_begun(&self) -> bool {
        matches!(
            self,
            Side::Server { answering, others_held: false, .. } if !answering.is_empty()
        )
    }

    fn wrote(&mut self) {
        match self {
            Side::Client { answered } => *answered = 0,
            Side::Server { others_held, .. } => *others_held = false,
        }
    }
}

/// A stream whose writes are held until a flush, which sends them after at most one yield.
pub struct Coalesce<S> {
    inner: S,
    /// Bytes accepted from the writer and not yet written to `inner`, from `sent` on.
    held: Vec<u8>,
    sent: usize,
    /// The current flush has yielded once already.
    yielded: bool,
    /// A flush was answered without writing, to wait for the end of a begun answer; the
    /// timer makes sure a later flush writes the bytes if that end is slow to come.
    awaiting_answer_end: Option<Pin<Box<tokio::time::Sleep>>>,
    read_frames: FrameScanner,
    written_frames: FrameScanner,
    side: Side,
}

impl<S> Coalesce<S> {
    /// The server side of a connection (its first bytes read are the client's preface).
    pub fn server(inner: S) -> Coalesce<S> {
        let side = Side::Server {
            unanswered: HashSet::new(),
            answering: HashSet::new(),
            answered_early: HashSet::new(),
            others_held: false,
        };
        Coalesce::new(
            inner,
            FrameScanner::skipping(CLIENT_PREFACE_LEN),
            FrameScanner::default(),
            side,
        )
    }

    /// The client side of a connection (it writes the preface itself, before any frame).
    pub fn client(inner: S) -> Coalesce<S> {
        Coalesce::new(
            inner,
            FrameScanner::default(),
            FrameScanner::skipping(CLIENT_PREFACE_LEN),
            Side::Client { answered: 0 },
        )
    }

    fn new(
        inner: S,
        read_frames: FrameScanner,
        written_frames: FrameScanner,
        side: Side,
    ) -> Coalesce<S> {
        Coalesce {
            inner,
            held: Vec::new(),
            sent: 0,
            yielded: false,
            awaiting_answer_end: None,
            read_frames,
            written_frames,
            side,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn pending_bytes(&self) -> usize {
        self.held.len() - self.sent
    }

    /// Notes the frames of bytes handed to the socket or held for it.
    fn note_written(&mut self, bytes: &[u8]) {
        let side = &mut self.side;
        self.written_frames.scan(bytes, |event| side.written(event));
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes every held byte to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        self.awaiting_answer_end = None;
        self.side.wrote();
        if self.held.capacity() > 2 * HOLD_LIMIT {
            self.held = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: `Ok(true)` when they can be held, `Ok(false)` when
    /// they are too large to hold and must go to `inner` directly (nothing is held then).
    fn poll_make_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.pending_bytes() + len <= HOLD_LIMIT {
            return Poll::Ready(Ok(true));
        }
        ready!(self.poll_drain(cx))?;
        Poll::Ready(Ok(len <= HOLD_LIMIT))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let side = &mut this.side;
        this.read_frames
            .scan(&buf.filled()[before..], |event| side.read(event));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = if ready!(this.poll_make_room(cx, buf.len()))? {
            this.held.extend_from_slice(buf);
            buf.len()
        } else {
            ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?
        };
        this.note_written(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let n = if ready!(this.poll_make_room(cx, len))? {
            for b in bufs {
                this.held.extend_from_slice(b);
            }
            len
        } else {
            ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?
        };
        let mut left = n;
        for b in bufs {
            let taken = left.min(b.len());
            this.note_written(&b[..taken]);
            left -= taken;
            if left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending_bytes() > 0
            && this.awaiting_answer_end.is_none()
            && this.side.answer_begun()
        {
            // The answer's trailers come from its own task, which h2 wakes as it takes the
            // message: report the flush done and write everything at the next one, which the
            // trailers' arrival brings (or the timer, whichever is first).
            let mut timer = Box::pin(tokio::time::sleep(ANSWER_END_WAIT));
            if timer.as_mut().poll(cx).is_pending() {
                this.awaiting_answer_end = Some(timer);
                return Poll::Ready(Ok(()));
            }
        }
        if this.pending_bytes() > 0 && !this.yielded && this.side.more_is_coming() {
            // Waking a task while it runs makes tokio queue it behind the tasks already ready
            // (not in its "run next" slot), so the tasks finishing the other messages go first.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Coalesce<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::task::Wake;

    /// A socket that records every write it is given.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        incoming: Vec<u8>,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.incoming.len().min(buf.remaining());
            buf.put_slice(&self.incoming[..n]);
            self.incoming.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Counts how often the task was woken.
    #[derive(Default)]
    struct Wakes(Mutex<usize>);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            if let Ok(mut n) = self.0.lock() {
                *n += 1;
            }
        }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            len: payload.len(),
            kind,
            flags,
            stream,
        };
        [&header.encode()[..], payload].concat()
    }

    fn read_all<S: AsyncRead + Unpin>(io: &mut S, cx: &mut Context<'_>) {
        let mut space = [0u8; 256];
        loop {
            let mut buf = ReadBuf::new(&mut space);
            match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                _ => return,
            }
        }
    }

    #[test]
    fn frame_headers_split_across_reads_are_found() {
        let mut bytes = vec![0u8; CLIENT_PREFACE_LEN];
        bytes.extend(frame(HEADERS, 0x4, 1, b"head"));
        bytes.extend(frame(
            DATA,
            END_STREAM,
            1,
            b"body with a frame header inside: 000000000",
        ));
        bytes.extend(frame(DATA, 0, 3, b"x"));
        bytes.extend(frame(RST_STREAM, 0, 5, &[0, 0, 0, 8]));
        for chunk in [1, 4, 9, 10, 1000] {
            let mut scanner = FrameScanner::skipping(CLIENT_PREFACE_LEN);
            let mut events = vec![];
            for piece in bytes.chunks(chunk) {
                scanner.scan(piece, |e| events.push(e));
            }
            assert_eq!(
                events,
                vec![
                    StreamEvent::Continued(1),
                    StreamEvent::Ended(1),
                    StreamEvent::Continued(3),
                    StreamEvent::Reset(5)
                ],
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn a_server_holds_an_answer_while_other_requests_wait_for_theirs() {
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut incoming = vec![0u8; CLIENT_PREFACE_LEN];
        for stream in [1, 3, 5] {
            incoming.extend(frame(HEADERS, 0x4, stream, b"h"));
            incoming.extend(frame(DATA, END_STREAM, stream, b"request"));
        }
        let mut io = Coalesce::server(Recorder {
            incoming,
            ..Recorder::default()
        });
        read_all(&mut io, &mut cx);

        // The answer to stream 1 is ready; 3's and 5's are not: the flush yields once.
        let answer1 = frame(HEADERS, 0x4 | END_STREAM, 1, b"trailers");
        assert!(matches!(
            Pin::new(&mut io).poll_write(&mut cx, &answer1),
            Poll::Ready(Ok(_))
        ));
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        assert_eq!(*wakes.0.lock().unwrap(), 1);
        assert!(io.get_ref().writes.is_empty());

        // Meanwhile stream 3's answer came: both leave in one write.
        let answer3 = frame(HEADERS, 0x4 | END_STREAM, 3, b"trailers");
        let _ = Pin::new(&mut io).poll_write(&mut cx, &answer3);
        assert!(matches!(
            Pin::new(&mut io).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(io.get_ref().writes, vec![[answer1, answer3].concat()]);

        // One request is left unanswered: waiting for a single answer does not pay, so the
        // next flush writes at once.
        let ping = frame(0x6, 0, 0, &[0; 8]);
        let _ = Pin::new(&mut io).poll_write(&mut cx, &ping);
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.get_ref().writes.len(), 2);
        assert_eq!(*wakes.0.lock().unwrap(), 1);
    }

    /// A server that has read one finished request (stream 1) and the opening of a stream the
    /// client keeps open (3, like a watch).
    fn server_with_one_request(cx: &mut Context<'_>) -> Coalesce<Recorder> {
        let mut incoming = vec![0u8; CLIENT_PREFACE_LEN];
        incoming.extend(frame(HEADERS, 0x4, 1, b"h"));
        incoming.extend(frame(DATA, END_STREAM, 1, b"request"));
        incoming.extend(frame(HEADERS, 0x4, 3, b"h"));
        let mut io = Coalesce::server(Recorder {
            incoming,
            ..Recorder::default()
        });
        read_all(&mut io, cx);
        io
    }

    fn runtime() -> tokio::runtime::Runtime {
        let built = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build();
        built.unwrap()
    }

    #[test]
    fn a_server_holds_the_start_of_an_answer_until_its_trailers() {
        let rt = runtime();
        let _in_runtime = rt.enter();
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut io = server_with_one_request(&mut cx);

        // The answer's headers and message: the flush reports done without writing.
        let start = [frame(HEADERS, 0x4, 1, b"h"), frame(DATA, 0, 1, b"answer")].concat();
        let _ = Pin::new(&mut io).poll_write(&mut cx, &start);
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert!(io.get_ref().writes.is_empty());

        // Its trailers: all of it leaves in one write.
        let trailers = frame(HEADERS, 0x4 | END_STREAM, 1, b"t");
        let _ = Pin::new(&mut io).poll_write(&mut cx, &trailers);
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.get_ref().writes, vec![[start, trailers].concat()]);

        // Messages on the open stream go out at once.
        let event = frame(DATA, 0, 3, b"event");
        let _ = Pin::new(&mut io).poll_write(&mut cx, &event);
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.get_ref().writes.len(), 2);
        assert_eq!(*wakes.0.lock().unwrap(), 0, "nothing waited on a wake");
    }

    #[test]
    fn the_start_of_an_answer_does_not_hold_back_another_streams_messages() {
        let rt = runtime();
        let _in_runtime = rt.enter();
        let waker = std::task::Waker::from(Arc::new(Wakes::default()));
        let mut cx = Context::from_waker(&waker);
        let mut io = server_with_one_request(&mut cx);
        let bytes = [
            frame(HEADERS, 0x4, 1, b"h"),
            frame(DATA, 0, 1, b"answer"),
            frame(DATA, 0, 3, b"event"),
        ]
        .concat();
        let _ = Pin::new(&mut io).poll_write(&mut cx, &bytes);
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.get_ref().writes, vec![bytes]);
    }

    #[test]
    fn the_start_of_an_answer_is_written_when_its_end_is_slow_to_come() {
        let rt = runtime();
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut io = rt.block_on(async { server_with_one_request(&mut cx) });
        let start = [frame(HEADERS, 0x4, 1, b"h"), frame(DATA, 0, 1, b"message")].concat();
        rt.block_on(async {
            let _ = Pin::new(&mut io).poll_write(&mut cx, &start);
            assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
            assert!(io.get_ref().writes.is_empty());
            tokio::time::sleep(ANSWER_END_WAIT * 5).await;
        });
        // The timer woke the connection, whose next flush writes what was held.
        assert_eq!(*wakes.0.lock().unwrap(), 1);
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.get_ref().writes, vec![start]);
    }

    #[test]
    fn a_client_holds_its_requests_only_after_several_answers_arrived() {
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesce::client(Recorder::default());
        let request = frame(DATA, END_STREAM, 1, b"request");
        let _ = Pin::new(&mut io).poll_write(&mut cx, &request);
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(
            io.get_ref().writes.len(),
            1,
            "one call at a time never waits"
        );

        io.inner.incoming = [
            frame(HEADERS, 0x4 | END_STREAM, 1, b"t"),
            frame(HEADERS, 0x4 | END_STREAM, 3, b"t"),
        ]
        .concat();
        read_all(&mut io, &mut cx);
        let _ = Pin::new(&mut io).poll_write(&mut cx, &frame(DATA, END_STREAM, 5, b"r"));
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        let _ = Pin::new(&mut io).poll_write(&mut cx, &frame(DATA, END_STREAM, 7, b"r"));
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(
            io.get_ref().writes.len(),
            2,
            "the two requests left together"
        );
    }

    #[test]
    fn a_write_larger_than_the_hold_limit_goes_straight_through() {
        let waker = std::task::Waker::from(Arc::new(Wakes::default()));
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesce::client(Recorder::default());
        let _ = Pin::new(&mut io).poll_write(&mut cx, b"small");
        let big = vec![7u8; HOLD_LIMIT + 1];
        assert!(matches!(
            Pin::new(&mut io).poll_write(&mut cx, &big),
            Poll::Ready(Ok(n)) if n == big.len()
        ));
        assert_eq!(io.get_ref().writes, vec![b"small".to_vec(), big]);
    }
}
