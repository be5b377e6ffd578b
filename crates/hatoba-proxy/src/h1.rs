//! Plain HTTP/1.x from clients, served by the proxy itself.
//!
//! hyper's server parses a request into its types, runs the service through
//! a general dispatcher and encodes the answer; for what a plain proxy
//! connection does all day (read a head, forward it, relay the answer) that
//! machinery was the largest user-space cost left on the request path. This
//! loop reads heads with `httparse`, hands each request to the same
//! [`forward::proxy`] that serves HTTP/2 and TLS, and writes the answer
//! itself: the head, and as much of the body as has already arrived, in one
//! write.
//!
//! Only well-formed, ordinary requests are served here. An upgrade, an
//! `Expect`, a transfer coding other than `chunked`, conflicting lengths, a
//! target that is not a path, a head that does not parse or is too large,
//! and the HTTP/2 preface all hand the connection, with the bytes read so
//! far, to hyper for the rest of its life ([`Served::Http1`],
//! [`Served::Http2`]): unusual and hostile input gets hyper's answers (400,
//! 431, 101 and the rest) exactly as before. Two things are refused here
//! with a 400 that closes the connection, as nginx does: a body framed by
//! both Content-Length and Transfer-Encoding, and an HTTP/1.1 request
//! without exactly one Host header (hyper would accept both).
//!
//! A connection is kept alive as HTTP/1.1 and HTTP/1.0 clients expect
//! (`Connection: close` and `keep-alive`), pipelined requests are answered in
//! order, and a request whose body was not read to its end (an early answer)
//! closes the connection after its answer. Waiting for a head is bounded by
//! the listener's header read timeout, idle keep-alive time included, and a
//! client that takes nothing of an answer for the send timeout is cut. When
//! the listener stops, an idle connection closes at once and a busy one after
//! its answer (`Connection: close`).

use crate::body::ProxyBody;
use crate::client::{self, Chunk, Conn, Framing};
use crate::forward::{self, Answer, Ctx, Peer, Relayed};
use crate::head::{Headers, RawHead, RequestHead, Span, Spans};
use crate::server::MAX_HEADER_BYTES;
use bytes::{Bytes, BytesMut};
use http_body_util::Either;
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Method, StatusCode};
use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What an HTTP/2 client with prior knowledge sends first.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Most header lines in a request served here (hyper's own limit: a request
/// with more goes to hyper, which answers 431).
const MAX_HEADERS: usize = 100;
/// Room kept free in the buffer before reading a head: most heads are far
/// smaller, and an idle keep-alive connection keeps this much.
const HEAD_CHUNK: usize = 4 * 1024;
/// Answer bytes gathered before a write.
const WRITE_AT: usize = 64 * 1024;
/// Larger buffers are let go between requests.
const KEEP_WHEN_IDLE: usize = 8 * 1024;
/// After an answer that leaves part of a request body unread, the rest is
/// read and dropped for at most this long (and this much) before the
/// connection closes, so that the client reads the answer instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// How a connection ended here.
pub(crate) enum Served {
    /// It is finished.
    Closed,
    /// hyper serves the rest as HTTP/1 (upgrades included).
    Http1(Rewind),
    /// hyper serves the rest as HTTP/2 (h2c with prior knowledge).
    Http2(Rewind),
}

/// Serves a plain client connection until it closes, or until it needs
/// hyper.
pub(crate) async fn serve(stream: TcpStream, ctx: &Ctx, peer: Peer) -> Served {
    let mut conn = Conn::from_stream(stream);
    let mut out: Vec<u8> = Vec::new();
    let mut stop = StopSignal::new();
    let timeout = ctx.opts.header_read_timeout;
    let send_timeout = ctx.opts.send_timeout;
    let mut deadline = std::pin::pin!(tokio::time::sleep(timeout));
    let mut first = true;
    loop {
        // A whole head, from what is buffered and what arrives within the timeout.
        let mut armed = false;
        let head = loop {
            if !conn.buf.is_empty() {
                let preface = conn.buf.len().min(H2_PREFACE.len());
                if first && conn.buf[..preface] == H2_PREFACE[..preface] {
                    if preface == H2_PREFACE.len() {
                        return Served::Http2(Rewind::new(conn));
                    }
                } else {
                    match parse_request(&mut conn.buf) {
                        Parsed::Request(head) => break head,
                        Parsed::Partial => {}
                        Parsed::Hyper => return Served::Http1(Rewind::new(conn)),
                        Parsed::Refused(why) => {
                            let answer = forward::bad_request(why, None).into();
                            let _ = respond(
                                &mut conn.io,
                                &mut out,
                                answer,
                                false,
                                false,
                                true,
                                send_timeout,
                            )
                            .await;
                            linger(&mut conn).await;
                            return Served::Closed;
                        }
                    }
                }
            }
            if !armed {
                deadline.as_mut().reset(Instant::now() + timeout);
                armed = true;
            }
            conn.buf.reserve(HEAD_CHUNK);
            let idle = conn.buf.is_empty();
            tokio::select! {
                biased;
                read = conn.io.read_buf(&mut conn.buf) => match read {
                    Ok(0) | Err(_) => return Served::Closed,
                    Ok(_) => {}
                },
                () = &mut deadline => return Served::Closed,
                // A stop closes a connection idle between requests, never
                // one that has not had its first: the proxy accepted it,
                // so its client is owed an answer, and its request may be
                // in the socket already, unseen (tokio learns that a
                // socket is readable only when its driver runs, and
                // closing a socket with unread data resets it: a cut).
                // The header read timeout still bounds the wait.
                () = &mut stop, if idle && !first => {
                    // Between requests too, a next request the kernel
                    // holds already is served rather than reset.
                    if !read_waiting(&conn.io, &mut conn.buf) {
                        return Served::Closed;
                    }
                }
            }
        };
        first = false;
        let Request1 {
            method,
            head,
            target,
            framing,
            keep_alive,
            http10,
        } = *head;
        let head_request = method == Method::HEAD;
        let mut framing = framing;
        let answer = {
            let request = RequestHead {
                method: &method,
                target: head.get(target),
                authority: None,
                headers: Headers::Raw(&head),
            };
            let body = ClientBody {
                conn: &mut conn,
                framing: &mut framing,
            };
            forward::proxy(&request, body, ctx, peer).await
        };
        // The rest of an unread body is not the start of the next request.
        let body_read = framing.is_done();
        let close = !keep_alive || !body_read || stop.stopping();
        let Ok(closing) = respond(
            &mut conn.io,
            &mut out,
            answer,
            head_request,
            http10,
            close,
            send_timeout,
        )
        .await
        else {
            return Served::Closed;
        };
        if closing {
            if !body_read || !conn.buf.is_empty() {
                linger(&mut conn).await;
            }
            return Served::Closed;
        }
        // Buffers grown for a large answer or upload are not kept by a
        // connection that may now sit idle for long.
        if out.capacity() > KEEP_WHEN_IDLE {
            out = Vec::new();
        }
        if conn.buf.is_empty() && conn.buf.capacity() > KEEP_WHEN_IDLE {
            conn.buf = BytesMut::new();
        }
    }
}

/// Reads what the kernel holds for `stream` now into `buf`, with a real
/// `recv` rather than through tokio's cached readiness; false when nothing
/// is waiting (or the connection is closed or broken).
fn read_waiting(stream: &TcpStream, buf: &mut BytesMut) -> bool {
    use std::io::Read as _;
    let socket = socket2::SockRef::from(stream);
    let mut chunk = [0u8; 4096];
    match (&*socket).read(&mut chunk) {
        Ok(n) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

/// A request head read here, with what serving it needs to know.
struct Request1 {
    method: Method,
    /// The head as received.
    head: RawHead,
    /// Where the request target is in `head`.
    target: Span,
    /// How its body is delimited.
    framing: Framing,
    /// The client wants the connection kept open after the answer.
    keep_alive: bool,
    http10: bool,
}

enum Parsed {
    Request(Box<Request1>),
    Partial,
    /// Not for this path: hyper takes the connection.
    Hyper,
    /// Answered 400 with this reason, then the connection closes.
    Refused(&'static str),
}

/// Parses a request head at the start of `buf`, consuming it when it is
/// served here.
fn parse_request(buf: &mut BytesMut) -> Parsed {
    // Uninitialised: zeroing room for every possible header costs more than
    // parsing the few a request has.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEADER_BYTES => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEADER_BYTES => return Parsed::Partial,
        // Too large, too many headers, malformed: hyper says so.
        Ok(_) | Err(_) => return Parsed::Hyper,
    };
    let (Some(method), Some(path), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Parsed::Hyper;
    };
    // A path, in plain visible ASCII: anything else is hyper's to judge.
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Parsed::Hyper;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Hyper;
    };
    let http10 = version == 0;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut hosts = 0;
    let spans = Spans::of(buf);
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        fields.push(spans.field(name, h.value));
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in h.value.split(|b| *b == b',') {
                match client::parse_decimal(part.trim_ascii()) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => return Parsed::Hyper,
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Parsed::Hyper;
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Hyper;
                }
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"expect") {
            return Parsed::Hyper;
        }
    }
    if chunked && length.is_some() {
        return Parsed::Refused(forward::FRAMING_REFUSED);
    }
    if hosts > 1 || (hosts == 0 && !http10) {
        return Parsed::Refused(forward::HOST_REFUSED);
    }
    if chunked && http10 {
        return Parsed::Hyper;
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked(Chunk::Size),
        (false, None | Some(0)) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    let keep_alive = !close && (!http10 || keep_alive);

    let target = spans.span(path.as_bytes());
    let head = RawHead::new(buf.split_to(len).freeze(), fields);
    Parsed::Request(Box::new(Request1 {
        method,
        head,
        target,
        framing,
        keep_alive,
        http10,
    }))
}

/// A client's request body, read from its connection as the upstream side
/// asks for it.
struct ClientBody<'c> {
    conn: &'c mut Conn,
    framing: &'c mut Framing,
}

impl Body for ClientBody<'_> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        Poll::Ready(ready!(this.conn.poll_body(cx, this.framing)).map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.framing.size_hint()
    }
}

/// How an answer's body goes to the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// No body (HEAD, 204, 304).
    Nothing,
    Length,
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    UntilClose,
}

/// Writes `answer` to the client: its head, then its body as it comes, in
/// as few writes as it allows. Returns whether the connection must close;
/// fails when the client takes nothing for `send_timeout`.
async fn respond(
    io: &mut TcpStream,
    out: &mut Vec<u8>,
    answer: Answer,
    head_request: bool,
    http10: bool,
    mut close: bool,
    send_timeout: Duration,
) -> io::Result<bool> {
    // A backend's head is copied as received; a made answer's from its map.
    let (status, relayed, made, mut body): (_, _, _, ProxyBody) = match answer {
        Answer::Relayed(Relayed { head, sticky, body }) => {
            (head.status, Some((head, sticky)), None, Either::Left(body))
        }
        Answer::Made(made) => {
            let (parts, body) = made.into_parts();
            (parts.status, None, Some(parts.headers), body)
        }
    };
    let sent = if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Sent::Nothing
    } else if body.size_hint().exact().is_some() {
        Sent::Length
    } else if !http10 {
        Sent::Chunked
    } else {
        close = true;
        Sent::UntilClose
    };
    out.clear();
    let framing = (sent, body.size_hint().exact().unwrap_or(0));
    match (&relayed, &made) {
        (Some((head, sticky)), _) => {
            let cookie = sticky.as_ref().map(|c| (&b"set-cookie"[..], c.as_bytes()));
            write_head(
                out,
                status,
                head.headers().chain(cookie),
                framing,
                http10,
                close,
            );
        }
        (None, made) => {
            let headers = made.iter().flatten();
            let headers = headers.map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
            write_head(out, status, headers, framing, http10, close);
        }
    }
    if sent != Sent::Nothing {
        loop {
            // What the body has already joins what waits to be written; the
            // write happens only when the body has nothing more right now.
            let frame = match std::future::poll_fn(|cx| {
                Poll::Ready(match Pin::new(&mut body).poll_frame(cx) {
                    Poll::Ready(frame) => Some(frame),
                    Poll::Pending => None,
                })
            })
            .await
            {
                Some(frame) => frame,
                None => {
                    flush(io, out, send_timeout).await?;
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
                // The backend's body failed: what was sent stays sent, and
                // closing tells the client it is incomplete.
                Some(Err(_)) => {
                    flush(io, out, send_timeout).await?;
                    return Ok(true);
                }
            };
            if sent == Sent::Chunked {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&data);
            }
            if out.len() >= WRITE_AT {
                flush(io, out, send_timeout).await?;
            }
        }
        if sent == Sent::Chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    flush(io, out, send_timeout).await?;
    // The body ends here, recording the request, before the next one.
    drop(body);
    Ok(close)
}

/// Writes what `out` holds. A client that takes none of it for `timeout`
/// fails the write (nginx's `send_timeout`); the timer is armed only when
/// the socket is full, which it rarely is.
async fn flush(io: &mut TcpStream, out: &mut Vec<u8>, timeout: Duration) -> io::Result<()> {
    let mut written = 0;
    while written < out.len() {
        let rest = &out[written..];
        let n =
            match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *io).poll_write(cx, rest)))
                .await
            {
                Poll::Ready(n) => n?,
                Poll::Pending => match tokio::time::timeout(timeout, io.write(rest)).await {
                    Ok(n) => n?,
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the client took nothing of the answer for {timeout:?}"),
                        ));
                    }
                },
            };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    out.clear();
    Ok(())
}

/// Writes an answer's head: status line, its headers without the
/// hop-by-hop ones, the framing chosen here (`sent`, and the length when it
/// is [`Sent::Length`]), `Date` when the backend sent none, and `Connection`
/// when it has something to say.
fn write_head<'h>(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    (sent, length): (Sent, u64),
    http10: bool,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // A HEAD or 304 answer keeps the length the backend gave; otherwise the
    // length written is the one the body is sent with.
    let keep_length = sent == Sent::Nothing && status != StatusCode::NO_CONTENT;
    let mut dated = false;
    for (name, value) in headers {
        match Special::of(name) {
            Some(Special::Length) if keep_length => {}
            Some(Special::Length | Special::HopByHop) => continue,
            Some(Special::Date) => dated = true,
            None => {}
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match sent {
        Sent::Length => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(length.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Sent::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Sent::Nothing | Sent::UntilClose => {}
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&http_date());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Answer headers `write_head` treats apart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Special {
    Length,
    Date,
    /// Meaningful for one connection only (RFC 9110 §7.6.1): never relayed.
    HopByHop,
}

impl Special {
    /// Which, if any, `name` (in any case) is.
    fn of(name: &[u8]) -> Option<Special> {
        if name.eq_ignore_ascii_case(b"content-length") {
            Some(Special::Length)
        } else if name.eq_ignore_ascii_case(b"date") {
            Some(Special::Date)
        } else if forward::is_hop_by_hop_name(name) {
            Some(Special::HopByHop)
        } else {
            None
        }
    }
}

thread_local! {
    /// The `Date` header of the current second.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Now as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), formatted once a
/// second per thread.
fn http_date() -> [u8; 29] {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if let Ok(bytes) = <[u8; 29]>::try_from(text.as_bytes()) {
                *d = (secs, bytes);
            }
        }
        d.1
    })
}

/// Half-closes the connection and reads what the client still sends (the
/// rest of a body the answer made moot) for a short while, so that closing
/// does not reset the connection before the client has read the answer.
async fn linger(conn: &mut Conn) {
    if conn.io.shutdown().await.is_err() {
        return;
    }
    let mut drained = 0;
    let mut scratch = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while drained < LINGER_BYTES {
            match conn.io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// A client connection handed to hyper: the bytes already read come first.
pub(crate) struct Rewind {
    read: Bytes,
    io: TcpStream,
}

impl Rewind {
    fn new(conn: Conn) -> Rewind {
        Rewind {
            read: conn.buf.freeze(),
            io: conn.io,
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The stop of this thread's listener, as the connections it serves see it.
///
/// Every connection waits for it between requests. A `watch` channel would
/// take a lock shared by all threads each time; this is one thread-local
/// list of wakers, touched only when the connection's task was woken by
/// something else.
#[derive(Default)]
struct Stops {
    stopping: bool,
    waiting: Vec<Option<Waker>>,
    free: Vec<usize>,
}

thread_local! {
    static STOPS: RefCell<Stops> = RefCell::default();
}

/// Stops the connections of this thread: idle ones close, busy ones after
/// their answer.
pub(crate) fn stop_this_thread() {
    let wakers: Vec<Waker> = STOPS.with(|s| {
        let mut s = s.borrow_mut();
        s.stopping = true;
        s.waiting.iter_mut().filter_map(Option::take).collect()
    });
    for w in wakers {
        w.wake();
    }
}

/// One connection's view of [`stop_this_thread`]: a future that is ready
/// once the thread stops.
struct StopSignal {
    slot: usize,
}

impl StopSignal {
    fn new() -> StopSignal {
        let slot = STOPS.with(|s| {
            let mut s = s.borrow_mut();
            match s.free.pop() {
                Some(slot) => slot,
                None => {
                    s.waiting.push(None);
                    s.waiting.len() - 1
                }
            }
        });
        StopSignal { slot }
    }

    fn stopping(&self) -> bool {
        STOPS.with(|s| s.borrow().stopping)
    }
}

impl std::future::Future for StopSignal {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        STOPS.with(|s| {
            let mut s = s.borrow_mut();
            if s.stopping {
                return Poll::Ready(());
            }
            let slot = &mut s.waiting[self.slot];
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        // A thread-local is gone only when its thread ends.
        let _ = STOPS.try_with(|s| {
            let mut s = s.borrow_mut();
            s.waiting[self.slot] = None;
            s.free.push(self.slot);
        });
    }
}

#[cfg(test)]
mod tests;
