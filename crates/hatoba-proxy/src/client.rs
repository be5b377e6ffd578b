//! Upstream HTTP/1.1, driven inline by the request's own task.
//!
//! hyper's client runs every upstream connection as a task of its own and
//! talks to it over channels: a proxied request then costs two extra task
//! wake-ups and several channel operations, on top of the server side's work.
//! This client has no task: the request's future writes the head, streams the
//! body, reads and parses the response head, and the response body (a
//! [`crate::body::Tracked`]) reads the rest from the same socket as the
//! server side asks for it. Only what a reverse proxy needs is here: no
//! pipelining, no upgrades (WebSockets keep hyper, in `upgrade`), framing
//! after RFC 9112 §6.3.
//!
//! A connection is reused only when its response ended cleanly and both
//! sides wanted keep-alive. Before a pooled connection is reused its read
//! readiness is checked (no system call unless the kernel reported
//! something): a backend that closed it, or sent anything unasked, loses it.
//!
//! Over 800 lines with its unit tests (about 280 of them), not yet split:
//! the connection's write of a head, its read of the answer's framing and
//! its reuse are one state machine, read in one place. The next step is
//! its tests into `client/tests.rs`, then the answer's parsing
//! (`parse_head`, `decode_chunked`) into a module of its own.

use crate::forward::Seen;
use crate::head::{RawHead, RequestHead, Spans};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::StatusCode;
use hyper::body::{Body, SizeHint};
use hyper::header::HeaderMap;
use std::future::Future as _;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Largest response head accepted from a backend.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most header lines accepted in a response head.
const MAX_RESPONSE_HEADERS: usize = 128;
/// Read size: room kept free in the buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Longest chunk-size line (with extensions) of a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Most bytes of trailers after a chunked body (read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// One keep-alive connection to a backend.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) io: TcpStream,
    /// Bytes received and not yet consumed.
    pub(crate) buf: BytesMut,
    /// Served at least one request before this one.
    pub(crate) reused: bool,
}

/// Why a new connection could not be made. Nothing was sent: always safe to
/// retry elsewhere.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect to {addr} failed")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connect to {addr} timed out after {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The head could not be written: the backend got nothing it could act
    /// on. Safe to retry anywhere, whatever the method.
    #[error("the request could not be sent: {0}")]
    NotSent(#[source] io::Error),
    /// Sent, and the connection closed or reset before any byte of an answer.
    #[error("the connection closed before any answer")]
    NoResponse,
    /// The client's body failed (it went away mid-upload): not the backend's fault.
    #[error("the client's body ended early")]
    ClientBody,
    /// The backend answered something that is not an HTTP/1.x response.
    #[error("the instance's answer is not HTTP: {0}")]
    Garbage(&'static str),
}

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes (left to read).
    Length(u64),
    /// Chunked transfer coding.
    Chunked(Chunk),
    /// Until the backend closes the connection.
    Close,
}

impl Framing {
    /// Nothing (more) to read.
    pub(crate) fn is_done(self) -> bool {
        matches!(self, Framing::Empty | Framing::Length(0))
    }

    /// What is known of the length still to read.
    pub(crate) fn size_hint(self) -> SizeHint {
        match self {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Chunked(_) | Framing::Close => SizeHint::default(),
        }
    }
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// After a chunk's data, expecting its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one, this many bytes so far.
    Trailers(usize),
}

/// A response head from a backend, as received, with how its body is
/// framed. The headers stay bytes: the proxy's own HTTP/1 side copies them
/// out as they are; a header map is built only for hyper's side
/// ([`Head::header_map`]).
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    /// The head's bytes and where its headers are in them.
    raw: RawHead,
    pub(crate) framing: Framing,
    /// The connection may carry another request after this body.
    pub(crate) keep_alive: bool,
}

impl Head {
    /// The headers in the order received, names as the backend spelled them.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.raw.headers()
    }

    /// The headers as a header map, sharing the head's bytes. Names and
    /// values were checked when the head was parsed.
    pub(crate) fn header_map(&self) -> HeaderMap {
        self.raw.header_map()
    }
}

impl Conn {
    /// A connection over a socket that is already open (a client's, on the
    /// server side: its request bodies are read with [`Conn::poll_body`] too).
    pub(crate) fn from_stream(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            reused: false,
        }
    }

    /// Opens a new connection to `addr`.
    pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, ConnectError> {
        Ok(Conn::from_stream(connect_tcp(addr, timeout).await?))
    }

    /// True when the connection can carry another request: the backend has
    /// not closed it and sent nothing unasked. Costs a system call only when
    /// the kernel reported the socket readable.
    pub(crate) fn is_idle_open(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes a request (`head` as built by [`write_head`], then `body`
    /// framed as `framing`) and reads the answer's head, skipping interim
    /// (1xx) answers. The body is taken only once the head is written, so a
    /// request that could not be sent can be sent elsewhere whole.
    /// `head_request`: the method was HEAD (no body follows whatever the
    /// headers say).
    pub(crate) async fn exchange<B>(
        &mut self,
        head: &[u8],
        body: &mut Option<B>,
        framing: Framing,
        head_request: bool,
    ) -> Result<Head, SendError>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        self.io.write_all(head).await.map_err(SendError::NotSent)?;
        if framing != Framing::Empty
            && let Some(body) = body.take()
        {
            // The backend may answer before it has read the whole body (a
            // 413 for an upload too large, say) and then stop reading: watch
            // for its answer while writing, or the write would wait forever.
            {
                let (mut rd, mut wr) = self.io.split();
                let mut write = pin!(write_body(&mut wr, body, framing));
                let buf = &mut self.buf;
                loop {
                    buf.reserve(READ_CHUNK);
                    tokio::select! {
                        biased;
                        written = &mut write => match written {
                            Ok(()) => break,
                            Err(BodyWrite::Client) => return Err(SendError::ClientBody),
                            // It stopped reading: read what it said, if anything.
                            Err(BodyWrite::Upstream) => break,
                        },
                        got = rd.read_buf(&mut *buf) => {
                            if !matches!(got, Ok(n) if n > 0) {
                                return Err(SendError::NoResponse);
                            }
                            match parse_head(buf, head_request)? {
                                // The rest of the body is never sent: this
                                // connection can not carry another request.
                                Parsed::Head(head) => return Ok(not_reusable(head)),
                                // An interim answer (100 Continue): keep writing.
                                Parsed::Interim => {}
                                Parsed::Partial if buf.len() >= MAX_RESPONSE_HEAD => {
                                    return Err(SendError::Garbage("response head too large"));
                                }
                                Parsed::Partial => {}
                            }
                        }
                    }
                }
            }
            // Not kept either way: a backend may answer before it has read
            // all of a long body and close the connection after its answer
            // (hyper's server does, when the rest has not arrived by then),
            // though the answer says keep-alive. The next request on it,
            // perhaps one that can not be replayed, would meet that close.
            // Bodies this long are rare enough for a new connection to cost
            // nothing that matters.
            return self.read_head(head_request).await.map(not_reusable);
        }
        self.read_head(head_request).await
    }

    async fn read_head(&mut self, head_request: bool) -> Result<Head, SendError> {
        let mut received = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, head_request)? {
                    Parsed::Head(h) => return Ok(h),
                    Parsed::Interim => continue,
                    Parsed::Partial if self.buf.len() >= MAX_RESPONSE_HEAD => {
                        return Err(SendError::Garbage("response head too large"));
                    }
                    Parsed::Partial => {}
                }
            }
            self.buf.reserve(READ_CHUNK);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) if !received => return Err(SendError::NoResponse),
                Ok(0) | Err(_) => return Err(SendError::Garbage("response cut short")),
                Ok(_) => received = true,
            }
        }
    }

    /// Reads more of a body framed as `framing` into a frame of data, or
    /// `None` at its end. `framing` is updated as the body is read.
    pub(crate) fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        framing: &mut Framing,
    ) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match framing {
                Framing::Empty => return Poll::Ready(None),
                Framing::Length(0) => {
                    *framing = Framing::Empty;
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if !self.buf.is_empty() {
                        let n = self
                            .buf
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        *left -= n as u64;
                        return Poll::Ready(Some(Ok(self.buf.split_to(n).freeze())));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Some(Err(cut_short())));
                    }
                }
                Framing::Close => {
                    if !self.buf.is_empty() {
                        return Poll::Ready(Some(Ok(self.buf.split().freeze())));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        *framing = Framing::Empty;
                        return Poll::Ready(None);
                    }
                }
                Framing::Chunked(state) => {
                    match decode_chunked(&mut self.buf, state) {
                        Ok(Decoded::Data(d)) => return Poll::Ready(Some(Ok(d))),
                        Ok(Decoded::End) => {
                            *framing = Framing::Empty;
                            return Poll::Ready(None);
                        }
                        Ok(Decoded::NeedMore) => {}
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Some(Err(cut_short())));
                    }
                }
            }
        }
    }

    /// Reads what the socket has into the buffer; 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_CHUNK);
        // `read_buf` goes through the stream's `AsyncRead`, which clears the
        // readiness after a short read: the next read waits for the kernel
        // instead of trying (and failing) a system call first.
        pin!(self.io.read_buf(&mut self.buf)).poll(cx)
    }

    /// True when nothing beyond the last response was received.
    pub(crate) fn is_clean(&self) -> bool {
        self.buf.is_empty()
    }
}

/// A TCP connection to a backend, with Nagle off (requests and answers are
/// written whole).
pub(crate) async fn connect_tcp(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let io = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
    };
    let _ = io.set_nodelay(true);
    Ok(io)
}

fn not_reusable(mut head: Head) -> Head {
    head.keep_alive = false;
    head
}

/// Streams the client's body upstream, framed as `framing`.
async fn write_body<B>(
    io: &mut (impl tokio::io::AsyncWrite + Unpin),
    mut body: B,
    framing: Framing,
) -> Result<(), BodyWrite>
where
    B: Body<Data = Bytes> + Unpin,
{
    let chunked = matches!(framing, Framing::Chunked(_));
    // A chunk goes in one write: its size line, data and end (and the last
    // chunk too, when the body says it is done).
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyWrite::Client)?;
        let Ok(data) = frame.into_data() else {
            // Trailers: dropped (few backends read them; hyper's server
            // does not hand them to applications either).
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if !chunked {
            io.write_all(&data).await.map_err(|_| BodyWrite::Upstream)?;
            continue;
        }
        out.clear();
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\r\n");
        if body.is_end_stream() {
            out.extend_from_slice(b"0\r\n\r\n");
            io.write_all(&out).await.map_err(|_| BodyWrite::Upstream)?;
            return Ok(());
        }
        io.write_all(&out).await.map_err(|_| BodyWrite::Upstream)?;
    }
    if chunked {
        io.write_all(b"0\r\n\r\n")
            .await
            .map_err(|_| BodyWrite::Upstream)?;
    }
    Ok(())
}

enum BodyWrite {
    Client,
    Upstream,
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the connection closed mid-body",
    )
}

enum Parsed {
    Head(Head),
    /// A 1xx answer was consumed; another head follows.
    Interim,
    Partial,
}

/// Parses a response head at the start of `buf`, consuming it when whole.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, SendError> {
    // Uninitialised: zeroing room for every possible header costs more than
    // parsing the few a response has.
    let mut headers =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut headers,
    );
    let len = match parsing {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(SendError::Garbage("too many headers")),
        Err(httparse::Error::HeaderValue) => return Err(SendError::Garbage("bad header value")),
        Err(_) => return Err(SendError::Garbage("malformed response head")),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| SendError::Garbage("bad status code"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(SendError::Garbage(
                "101 Switching Protocols without an upgrade",
            ));
        }
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let http10 = parsed.version == Some(0);
    // httparse refuses names that are not tokens and values with control
    // characters other than tab: a head a header map would refuse is refused
    // now, whichever side of the proxy relays it.
    let spans = Spans::of(buf);
    let mut fields = Vec::with_capacity(parsed.headers.len());
    let mut framing = Framing::Close;
    let (mut length, mut chunked, mut coded) = (None, false, false);
    let (mut close, mut keep_alive_token) = (false, false);
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The last coding decides; a later header's codings come after.
            coded = true;
            if let Some(last) = tokens(h.value).next_back() {
                chunked = last.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for part in h.value.split(|b| *b == b',') {
                let n = parse_decimal(part.trim_ascii())
                    .ok_or(SendError::Garbage("bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(SendError::Garbage("conflicting Content-Length"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in tokens(h.value) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive_token |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        fields.push(spans.field(name, h.value));
    }
    // RFC 9112 §6.3, in its order.
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        framing = Framing::Empty;
    } else if coded {
        if chunked {
            framing = Framing::Chunked(Chunk::Size);
        }
    } else {
        match length {
            Some(0) => framing = Framing::Empty,
            Some(n) => framing = Framing::Length(n),
            None => {}
        }
    }
    let keep_alive = framing != Framing::Close && if http10 { keep_alive_token } else { !close };
    let raw = RawHead::new(buf.split_to(len).freeze(), fields);
    // The version stays HTTP/1.1: the client's side of the proxy speaks its
    // own version, whatever the backend spoke.
    Ok(Parsed::Head(Head {
        status,
        raw,
        framing,
        keep_alive,
    }))
}

/// The comma-separated tokens of a header value, trimmed, empty ones left out.
fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

enum Decoded {
    Data(Bytes),
    End,
    NeedMore,
}

/// Decodes what `buf` holds of a chunked body: the next piece of data, the
/// end, or a need for more bytes.
fn decode_chunked(buf: &mut BytesMut, state: &mut Chunk) -> io::Result<Decoded> {
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("chunked body: {what}"));
    loop {
        match state {
            Chunk::Size => {
                let Some(nl) = buf.iter().position(|b| *b == b'\n') else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(bad("chunk-size line too long"));
                    }
                    return Ok(Decoded::NeedMore);
                };
                let line = buf.split_to(nl + 1);
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                // Extensions (";name=value") are allowed and ignored.
                let size = line
                    .split(|b| *b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                if size.is_empty() || size.len() > 15 {
                    return Err(bad("bad chunk size"));
                }
                let n = size.iter().try_fold(0u64, |n, b| {
                    (*b as char).to_digit(16).map(|d| n * 16 + u64::from(d))
                });
                *state = match n {
                    None => return Err(bad("bad chunk size")),
                    Some(0) => Chunk::Trailers(0),
                    Some(n) => Chunk::Data(n),
                };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                let data = buf.split_to(n).freeze();
                if *left == 0 {
                    *state = Chunk::DataEnd;
                }
                return Ok(Decoded::Data(data));
            }
            Chunk::DataEnd => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                } else if buf.starts_with(b"\n") {
                    buf.advance(1);
                } else if buf.is_empty() || buf[..] == b"\r"[..] {
                    return Ok(Decoded::NeedMore);
                } else {
                    return Err(bad("chunk data longer than its size"));
                }
                *state = Chunk::Size;
            }
            Chunk::Trailers(seen) => {
                let Some(nl) = buf.iter().position(|b| *b == b'\n') else {
                    if *seen + buf.len() > MAX_TRAILERS {
                        return Err(bad("trailers too long"));
                    }
                    return Ok(Decoded::NeedMore);
                };
                let line = buf.split_to(nl + 1);
                *seen += line.len();
                if *seen > MAX_TRAILERS {
                    return Err(bad("trailers too long"));
                }
                if line[..] == b"\r\n"[..] || line[..] == b"\n"[..] {
                    return Ok(Decoded::End);
                }
            }
        }
    }
}

/// What a request needs written besides the client's own headers.
pub(crate) struct Forwarding<'a> {
    /// The client's address, as text.
    pub(crate) peer_ip: &'a [u8],
    /// `https` or `http`.
    pub(crate) proto: &'static [u8],
    /// The request id to send when the client gave none.
    pub(crate) request_id: &'a [u8],
}

/// Headers the proxy writes itself or never forwards.
fn skipped(name: &[u8]) -> bool {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        6 => is(b"expect"),
        14 => is(b"content-length"),
        15 => is(b"x-forwarded-for"),
        16 => is(b"x-forwarded-host"),
        17 => is(b"x-forwarded-proto"),
        _ => false,
    }
}

/// How the client's body will go upstream, from its headers and what hyper
/// knows of it.
pub(crate) fn request_framing(has_length: bool, body: &impl Body) -> Framing {
    if body.is_end_stream() {
        return Framing::Empty;
    }
    match body.size_hint().exact() {
        Some(0) => Framing::Empty,
        Some(n) if has_length => Framing::Length(n),
        _ => Framing::Chunked(Chunk::Size),
    }
}

/// Writes a request head in origin form: the client's headers without the
/// hop-by-hop ones (and those `Connection` names), with the forwarded ones
/// the proxy adds, framed for `framing`.
pub(crate) fn write_head(
    out: &mut Vec<u8>,
    request: &RequestHead<'_>,
    seen: &Seen<'_>,
    fwd: &Forwarding<'_>,
    framing: Framing,
) {
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let headers = request.headers;
    for (name, value) in headers.iter() {
        if crate::forward::is_hop_by_hop_name(name)
            || skipped(name)
            || (seen.connection && headers.named_in_connection(name))
        {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let host = match (seen.host, request.authority) {
        (Some(h), _) => Some(h),
        (None, Some(a)) => {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
            Some(a)
        }
        (None, None) => None,
    };
    out.extend_from_slice(b"x-forwarded-for: ");
    if seen.forwarded_for {
        for v in headers.get_all("x-forwarded-for") {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(fwd.peer_ip);
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(fwd.proto);
    out.extend_from_slice(b"\r\n");
    if let Some(host) = host {
        out.extend_from_slice(b"x-forwarded-host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
    }
    if seen.request_id.is_none() {
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(fwd.request_id);
        out.extend_from_slice(b"\r\n");
    }
    // The length is written as hyper read it, never as the client spelled
    // it: a list like `5, 5` or a second header must not reach a backend
    // that reads lengths differently (request smuggling).
    match framing {
        Framing::Chunked(_) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // A client that said `Content-Length: 0` (a bodiless POST) keeps saying so.
        Framing::Empty | Framing::Close => {
            if seen.content_length {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], head_request: bool) -> Result<(Head, BytesMut), SendError> {
        let mut buf = BytesMut::from(raw);
        loop {
            match parse_head(&mut buf, head_request)? {
                Parsed::Head(h) => return Ok((h, buf)),
                Parsed::Interim => continue,
                Parsed::Partial => panic!("partial: {raw:?}"),
            }
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let (h, rest) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false).unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(&rest[..], b"hello");
        let (h, _) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap();
        assert_eq!(h.framing, Framing::Empty, "HEAD has no body");
        let (h, _) = parse(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let (h, _) = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(
            h.framing,
            Framing::Chunked(Chunk::Size),
            "chunked wins over length"
        );
        let (h, _) = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).unwrap();
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.keep_alive);
        let (h, _) = parse(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
        assert_eq!(h.framing, Framing::Close);
        let (h, _) = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).unwrap();
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked");
        let (h, _) = parse(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(h.keep_alive);
        let (h, _) = parse(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!h.keep_alive);
        let (h, _) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", false).unwrap();
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn interim_answers_are_skipped_and_garbage_is_named() {
        let (h, _) = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        for (raw, why) in [
            (&b"SSH-2.0-OpenSSH\r\n\r\n"[..], "malformed response head"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "conflicting Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "bad Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "bad Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\n\r\n",
                "bad header value",
            ),
            (
                b"HTTP/1.1 200 OK\r\nX-Bad: a\x7fb\r\n\r\n",
                "bad header value",
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "101 Switching Protocols without an upgrade",
            ),
        ] {
            match parse(raw, false) {
                Err(SendError::Garbage(w)) => assert_eq!(w, why, "{raw:?}"),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn header_values_survive_the_shared_copy() {
        let (h, _) = parse(
            b"HTTP/1.1 200 OK\r\nX-A: one\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        let m = h.header_map();
        assert_eq!(m["x-a"], "one");
        let raw: Vec<_> = h.headers().collect();
        assert_eq!(
            raw[0],
            (&b"X-A"[..], &b"one"[..]),
            "as the backend spelled it"
        );
        assert_eq!(raw.len(), 4);
        let cookies: Vec<_> = m.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }

    /// Feeds `wire` to the decoder in pieces of every size and checks the
    /// body and the end come out the same.
    #[test]
    fn chunked_decoding_is_independent_of_how_bytes_arrive() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
        for piece in 1..=wire.len() {
            let mut buf = BytesMut::new();
            let mut state = Chunk::Size;
            let mut body = Vec::new();
            let mut ended = false;
            for part in wire.chunks(piece) {
                buf.extend_from_slice(part);
                loop {
                    match decode_chunked(&mut buf, &mut state).unwrap() {
                        Decoded::Data(d) => body.extend_from_slice(&d),
                        Decoded::End => {
                            ended = true;
                            break;
                        }
                        Decoded::NeedMore => break,
                    }
                }
            }
            assert!(ended, "piece {piece}");
            assert_eq!(body, b"hello world", "piece {piece}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn bad_chunked_bodies_are_errors() {
        for wire in [
            &b"zz\r\nhello\r\n"[..],
            b"\r\n",
            b"3\r\nhello\r\n",
            b"ffffffffffffffffff\r\n",
        ] {
            let mut buf = BytesMut::from(wire);
            let mut state = Chunk::Size;
            let got = loop {
                match decode_chunked(&mut buf, &mut state) {
                    Ok(Decoded::Data(_)) => continue,
                    other => break other,
                }
            };
            assert!(got.is_err(), "{wire:?}");
        }
    }

    #[test]
    fn request_heads_drop_hop_by_hop_and_add_forwarded_headers() {
        use crate::head::Headers;
        use hyper::header::{self, HeaderValue};
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.test"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("s"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("spoofed"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        let fwd = Forwarding {
            peer_ip: b"127.0.0.1",
            proto: b"http",
            request_id: b"abc",
        };
        let write = |method: &hyper::Method,
                     target: &[u8],
                     headers: Headers<'_>,
                     authority: Option<&[u8]>,
                     framing: Framing| {
            let request = RequestHead {
                method,
                target,
                authority,
                headers,
            };
            let mut out = Vec::new();
            write_head(&mut out, &request, &Seen::scan(headers), &fwd, framing);
            String::from_utf8(out).unwrap()
        };
        let text = write(
            &hyper::Method::GET,
            b"/p?q=1",
            Headers::Map(&h),
            None,
            Framing::Empty,
        );
        assert_eq!(
            text,
            "GET /p?q=1 HTTP/1.1\r\nhost: example.test\r\naccept: */*\r\n\
             x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: example.test\r\nx-request-id: abc\r\n\r\n"
        );
        // The same head read as bytes: the same lines, as the client spelled them.
        let raw: &[u8] = b"GET /p?q=1 HTTP/1.1\r\nHost: example.test\r\n\
            Connection: keep-alive, X-Secret\r\nX-SECRET: s\r\nKeep-Alive: timeout=5\r\n\
            Expect: 100-continue\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\n\
            X-Forwarded-Proto: spoofed\r\nAccept: */*\r\n\r\n";
        let mut buf = [MaybeUninit::uninit(); 16];
        let mut parsed = httparse::Request::new(&mut []);
        httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut parsed, raw, &mut buf)
            .unwrap();
        let spans = Spans::of(raw);
        let fields = parsed
            .headers
            .iter()
            .map(|f| spans.field(f.name.as_bytes(), f.value));
        let head = RawHead::new(Bytes::from_static(raw), fields.collect());
        let text = write(
            &hyper::Method::GET,
            b"/p?q=1",
            Headers::Raw(&head),
            None,
            Framing::Empty,
        );
        assert_eq!(
            text,
            "GET /p?q=1 HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\n\
             x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: example.test\r\nx-request-id: abc\r\n\r\n"
        );

        let h2 = HeaderMap::new();
        let text = write(
            &hyper::Method::POST,
            b"/",
            Headers::Map(&h2),
            Some(b"h2.test"),
            Framing::Chunked(Chunk::Size),
        );
        assert!(text.contains("host: h2.test\r\n"), "{text}");
        assert!(text.contains("x-forwarded-host: h2.test\r\n"), "{text}");
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
        // Lengths are written as read, whatever the client's spelling.
        let mut h3 = HeaderMap::new();
        h3.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5, 5"));
        let text = write(
            &hyper::Method::PUT,
            b"/",
            Headers::Map(&h3),
            None,
            Framing::Length(5),
        );
        assert!(text.ends_with("\r\ncontent-length: 5\r\n\r\n"), "{text}");
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
    }
}
