//! The request path: choose a group and a backend, forward, retry what is
//! safe to retry, and answer clean JSON errors when nothing can serve.
//!
//! Retries: a request whose connection could not be made, or whose head
//! could not be written (a pooled connection closed under it), is retried,
//! whatever its method. A request that was sent but got no response (the
//! backend was killed mid-request) is retried only when it is idempotent and
//! all of it can be sent again: no body, or a body of at most 64 KiB (with
//! a length or chunked), which is read whole before anything goes upstream
//! and sent with a length in the same write as the head (larger bodies
//! stream and are not replayed), as Envoy's `reset` retry policy does. Retries go to another
//! backend of the same group, except after a stale pooled connection, which
//! is no fault of its backend. Only upstream failures count against a version.
//!
//! The upstream side is `client`: the request head is written straight from
//! the client's headers (hop-by-hop ones dropped, forwarded ones added) with
//! no intermediate header map, and kept for a replay.
//!
//! Over 800 lines, not yet split: the request path reads top to bottom in
//! one file (choice, forwarding, retries, answers), as it is profiled. The
//! next split is the choice of group and backend (`choose_group`,
//! `other_group`, `usable`, `pick_backend`, `p2c`) into a module of its own.

use crate::body::{ProxyBody, Tracked, is_event_stream};
use crate::client::{self, Conn, SendError};
use crate::head::{Headers, RequestHead};
use crate::pool;
use crate::table::{Backend, Group, InFlight, RouteTable, Router};
use crate::tls::TlsSettings;
use bytes::Bytes;
use hatoba_metrics::{Failure, Outcome, Role};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Timeouts and limits of one listener.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// A backend that does not accept a connection within this is skipped.
    pub connect_timeout: Duration,
    /// A backend that does not start answering within this gets a 504; one
    /// that sends nothing more of an answer's body for this long has the
    /// answer cut (nginx's `proxy_read_timeout`).
    pub response_timeout: Duration,
    /// At most this many backends are tried per request.
    pub max_attempts: usize,
    /// Terminate TLS with this certificate; `None` serves plain HTTP (and
    /// h2c). Requests get `X-Forwarded-Proto: https` exactly when this is set.
    pub tls: Option<TlsSettings>,
    /// A client must send a request's headers within this, or its connection
    /// is closed (slowloris); also how long an idle keep-alive connection may
    /// wait before its next request.
    pub header_read_timeout: Duration,
    /// A client that takes none of an answer's bytes for this long has its
    /// connection closed (nginx's `send_timeout`), whatever the protocol.
    pub send_timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> ProxyOptions {
        ProxyOptions {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(60),
            max_attempts: 3,
            tls: None,
            header_read_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// The header that pins a request to a role: `X-Hatoba-Route: canary`.
pub const ROUTE_HEADER: &str = "x-hatoba-route";
/// The cookie that keeps a client on one version when sticky sessions are on.
pub const STICKY_COOKIE: &str = "hatoba-version";

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// What every request of one listener thread needs: one per thread, so the
/// per-request reference count it takes stays on that thread's core.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) router: Arc<Router>,
    pub(crate) opts: ProxyOptions,
}

/// The backends tried so far for one request (at most `max_attempts`, and
/// never more than the group has): inline, no allocation for the usual few.
struct Tried {
    inline: [Option<SocketAddr>; 4],
    len: usize,
    more: Vec<SocketAddr>,
}

impl Tried {
    fn new() -> Tried {
        Tried {
            inline: [None; 4],
            len: 0,
            more: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, a: SocketAddr) {
        if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = Some(a);
        } else {
            self.more.push(a);
        }
        self.len += 1;
    }

    fn pop(&mut self) {
        if self.len == 0 {
            return;
        }
        self.len -= 1;
        if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = None;
        } else {
            self.more.pop();
        }
    }

    fn contains(&self, a: &SocketAddr) -> bool {
        self.inline.iter().flatten().any(|x| x == a) || self.more.contains(a)
    }
}

/// The client's address, formatted once per connection for `X-Forwarded-For`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    ip: [u8; 46],
    len: u8,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr) -> Peer {
        use std::io::Write as _;
        let mut ip = [0u8; 46];
        let mut w = &mut ip[..];
        let _ = write!(w, "{}", addr.ip());
        let len = u8::try_from(46 - w.len()).unwrap_or(0);
        Peer { addr, ip, len }
    }

    fn ip(&self) -> &[u8] {
        &self.ip[..usize::from(self.len)]
    }
}

/// The request's id: the client's `X-Request-Id`, or one made here.
enum RequestId<'h> {
    Given(&'h [u8]),
    Made([u8; 32]),
}

impl<'h> RequestId<'h> {
    fn of(given: Option<&'h [u8]>) -> RequestId<'h> {
        match given {
            Some(v) => RequestId::Given(v),
            None => RequestId::Made(new_request_id()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Given(v) => v,
            RequestId::Made(id) => id,
        }
    }

    /// For the answers the proxy makes itself (rare: built only then).
    fn header(&self) -> HeaderValue {
        HeaderValue::from_bytes(self.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

/// What the request path needs from the client's headers, found in one pass
/// over them: a request needs about ten lookups, and each lookup in a
/// header map hashes the name.
#[derive(Default)]
pub(crate) struct Seen<'h> {
    pub(crate) host: Option<&'h [u8]>,
    pub(crate) content_length: bool,
    pub(crate) request_id: Option<&'h [u8]>,
    route: Option<&'h [u8]>,
    pub(crate) forwarded_for: bool,
    pub(crate) connection: bool,
}

impl<'h> Seen<'h> {
    pub(crate) fn scan(headers: Headers<'h>) -> Seen<'h> {
        let mut seen = Seen::default();
        for (name, value) in headers.iter() {
            let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
            // The length tells most names apart at once.
            match name.len() {
                4 if is("host") => {
                    seen.host.get_or_insert(value);
                }
                10 if is("connection") => seen.connection = true,
                12 if is("x-request-id") => {
                    seen.request_id.get_or_insert(value);
                }
                14 if is("content-length") => seen.content_length = true,
                14 if is(ROUTE_HEADER) => {
                    seen.route.get_or_insert(value);
                }
                15 if is("x-forwarded-for") => seen.forwarded_for = true,
                _ => {}
            }
        }
        seen
    }
}

/// Forwards one request that came through hyper's server (HTTP/2, TLS, and
/// the HTTP/1 connections `h1` hands over): WebSocket upgrades go to
/// `upgrade`, everything else to [`proxy`].
pub(crate) async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
    peer: Peer,
) -> Result<Response<ProxyBody>, Infallible> {
    if let Some(why) = refused_http1(req.version(), req.headers()) {
        let seen = Seen::scan(Headers::Map(req.headers()));
        return Ok(bad_request(why, seen.request_id));
    }
    if is_upgrade(req.headers()) {
        let headers = Headers::Map(req.headers());
        let seen = Seen::scan(headers);
        let (router, opts) = (&*ctx.router, &ctx.opts);
        let request_id = RequestId::of(seen.request_id);
        let table = router.table();
        let now_ms = router.ms_at(Instant::now());
        let Some(group) = choose_group(&table, headers, seen.route, router, now_ms) else {
            return Ok(no_backend(&table, &request_id));
        };
        let request_id = request_id.header();
        return Ok(crate::upgrade::forward(req, router, group, peer.addr, opts, request_id).await);
    }
    let (parts, body) = req.into_parts();
    let request = RequestHead {
        method: &parts.method,
        target: parts
            .uri
            .path_and_query()
            .map_or(b"/", |pq| pq.as_str().as_bytes()),
        authority: (parts.version == Version::HTTP_2)
            .then(|| parts.uri.authority().map(|a| a.as_str().as_bytes()))
            .flatten(),
        headers: Headers::Map(&parts.headers),
    };
    Ok(proxy(&request, body, &ctx, peer).await.into_response())
}

/// The 400 for an HTTP/1.1 request without a Host header, or any request
/// with two (RFC 9112 §3.2): how caches get poisoned and requests routed
/// past a proxy's checks. nginx refuses them too.
pub(crate) const HOST_REFUSED: &str = "an HTTP/1.1 request needs exactly one Host header";
/// The 400 for a body framed both by Content-Length and by
/// Transfer-Encoding (RFC 9112 §6.1): the classic request smuggling.
pub(crate) const FRAMING_REFUSED: &str =
    "a request framed by both Content-Length and Transfer-Encoding is refused";

/// Why hyper's HTTP/1 request is refused before it goes anywhere (the plain
/// HTTP/1 loop checks the same as it parses, `h1::parse_request`). hyper
/// itself drops Content-Length when Transfer-Encoding is there.
fn refused_http1(version: Version, headers: &HeaderMap) -> Option<&'static str> {
    if version != Version::HTTP_11 && version != Version::HTTP_10 {
        return None;
    }
    let hosts = headers.get_all(header::HOST).iter().count();
    (hosts > 1 || (hosts == 0 && version == Version::HTTP_11)).then_some(HOST_REFUSED)
}

/// A 400 with the reason, after which the connection closes.
pub(crate) fn bad_request(why: &str, request_id: Option<&[u8]>) -> Response<ProxyBody> {
    let mut resp = error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        why,
        &RequestId::of(request_id).header(),
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Forwards one request (never an upgrade). Never fails: every problem
/// becomes a response.
pub(crate) async fn proxy<B>(request: &RequestHead<'_>, body: B, ctx: &Ctx, peer: Peer) -> Answer
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let started = Instant::now();
    let (router, opts) = (&*ctx.router, &ctx.opts);
    let now_ms = router.ms_at(started);
    let table = router.table();
    let seen = Seen::scan(request.headers);
    let request_id = RequestId::of(seen.request_id);
    let Some(mut group) = choose_group(&table, request.headers, seen.route, router, now_ms) else {
        return no_backend(&table, &request_id).into();
    };
    let gauge = group.stats.start();
    let mut framing = client::request_framing(seen.content_length, &body);
    let mut body = Some(body);
    // A small body (with a length, or chunked) is read whole before anything
    // goes upstream, and sent with a length in the same write as the head:
    // a backend that answers before reading it finds it already there
    // (hyper's server, for one, closes a connection whose request body had
    // not arrived when it answered), and a request tried again is sent again
    // whole. Of a larger chunked body, what was read goes with the head and
    // the rest streams.
    let mut read = Vec::new();
    let mut ended = false;
    if matches!(framing, client::Framing::Length(n) if n <= BUFFERED_BODY)
        || matches!(framing, client::Framing::Chunked(_))
    {
        let failed = match read_small(&mut body, &mut read, opts.header_read_timeout).await {
            Ok(done) => {
                ended = done;
                None
            }
            Err(BodyRead::Failed) => Some((
                StatusCode::BAD_REQUEST,
                "client_body",
                "the request body ended before its announced end".to_owned(),
            )),
            Err(BodyRead::Stalled) => Some((
                StatusCode::REQUEST_TIMEOUT,
                "client_timeout",
                format!(
                    "no more of the request body arrived for {:?}",
                    opts.header_read_timeout
                ),
            )),
        };
        if let Some((status, code, message)) = failed {
            return client_failed(group, started, status, code, &message, &request_id).into();
        }
    }
    let sent_framing = if ended {
        match read.len() {
            0 => client::Framing::Empty,
            n => client::Framing::Length(n as u64),
        }
    } else {
        framing
    };
    // The head is written once and, when a request is replayed, resent as is.
    let mut head = Vec::with_capacity(256 + 64 * request.headers.len() + read.len());
    client::write_head(
        &mut head,
        request,
        &seen,
        &client::Forwarding {
            peer_ip: peer.ip(),
            proto: if opts.tls.is_some() {
                b"https"
            } else {
                b"http"
            },
            request_id: request_id.as_bytes(),
        },
        sent_framing,
    );
    if ended {
        head.extend_from_slice(&read);
        framing = client::Framing::Empty;
    } else if !read.is_empty() {
        // The start of a chunked body too long to hold, as its first chunk.
        head.extend_from_slice(format!("{:x}\r\n", read.len()).as_bytes());
        head.extend_from_slice(&read);
        head.extend_from_slice(b"\r\n");
    }
    drop(read);
    let method = request.method;
    let head_request = *method == Method::HEAD;
    // A request that was sent but got no answer is replayed on another
    // backend only when it is idempotent and all of it can be sent again.
    let replayable = is_idempotent(method) && framing == client::Framing::Empty;

    let mut needs_host = seen.host.is_none() && request.authority.is_none();
    // Whether any attempt got the request to a backend (then only the
    // replay rules below may send it again).
    let mut delivered = false;
    let mut tried = Tried::new();
    // Stale pooled connections do not count as attempts; this bounds them.
    let mut stale_left = 8u32;
    let mut last_failure = ("upstream_unreachable", StatusCode::BAD_GATEWAY);
    while tried.len() < opts.max_attempts {
        let now_ms = if tried.len() == 0 {
            now_ms
        } else {
            router.now_ms()
        };
        let Some(backend) = pick_backend(group, &tried, router, now_ms) else {
            // Every instance of the group refused before anything was sent
            // (they all died at once, before passive ejection has seen it):
            // another group that still has instances, a warm previous
            // version at weight 0 included, takes the request, as nginx's
            // backup servers would. Nothing was sent, so nothing is replayed.
            match (
                delivered,
                other_group(&table, group, &tried, router, now_ms),
            ) {
                (false, Some(other)) => {
                    group = other;
                    continue;
                }
                _ => break,
            }
        };
        if needs_host {
            // An HTTP/1.0 request without Host goes upstream as HTTP/1.1,
            // which needs one: the upstream's own, as nginx sends
            // `$proxy_host`. Written once: a replay keeps the first.
            needs_host = false;
            let line_end = head.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
            let host = format!("host: {}\r\n", backend.addr);
            head.splice(line_end..line_end, host.bytes());
        }
        tried.push(backend.addr);
        let in_flight = InFlight::new(Arc::clone(backend));
        let Ok(mut conn) = ready_connection(backend, router, opts).await else {
            continue;
        };
        let sent = tokio::time::timeout(
            opts.response_timeout,
            conn.exchange(&head, &mut body, framing, head_request),
        )
        .await;
        match sent {
            Ok(Ok(answer)) => {
                router.connect_succeeded(backend);
                return respond(answer, conn, in_flight, gauge, group, &table, started, opts);
            }
            Ok(Err(SendError::ClientBody)) => {
                return client_failed(
                    group,
                    started,
                    StatusCode::BAD_REQUEST,
                    "client_body",
                    "the request body ended before its announced end",
                    &request_id,
                )
                .into();
            }
            Ok(Err(SendError::Garbage(why))) => {
                backend.stats.record(Outcome::Failed(Failure::Upstream));
                return fail(
                    group,
                    started,
                    StatusCode::BAD_GATEWAY,
                    "upstream_invalid",
                    &format!("the instance answered something that is not HTTP ({why})"),
                    &request_id.header(),
                )
                .into();
            }
            // A pooled connection the backend had closed (its keep-alive
            // timeout raced our reuse): nothing to blame the backend for;
            // try again, a fresh connection if need be.
            Ok(Err(SendError::NotSent(_))) if conn.reused && stale_left > 0 => {
                stale_left -= 1;
                tried.pop();
            }
            Ok(Err(SendError::NoResponse)) if conn.reused && replayable && stale_left > 0 => {
                stale_left -= 1;
                tried.pop();
            }
            Ok(Err(SendError::NotSent(_))) => {
                router.connect_failed(backend);
                backend.stats.record(Outcome::Failed(Failure::Upstream));
            }
            Ok(Err(SendError::NoResponse)) => {
                delivered = true;
                router.connect_failed(backend);
                backend.stats.record(Outcome::Failed(Failure::Upstream));
                if !replayable {
                    return fail(
                        group,
                        started,
                        StatusCode::BAD_GATEWAY,
                        "upstream_reset",
                        "the instance closed the connection before answering",
                        &request_id.header(),
                    )
                    .into();
                }
                last_failure = ("upstream_reset", StatusCode::BAD_GATEWAY);
            }
            Err(_) => {
                backend.stats.record(Outcome::Failed(Failure::Upstream));
                return fail(
                    group,
                    started,
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    &format!("no answer within {:?}", opts.response_timeout),
                    &request_id.header(),
                )
                .into();
            }
        }
    }
    let (code, status) = last_failure;
    fail(
        group,
        started,
        status,
        code,
        &format!(
            "no instance of `{}` could be reached ({} tried)",
            table.service,
            tried.len()
        ),
        &request_id.header(),
    )
    .into()
}

/// Bodies up to this long are read whole before the request goes upstream.
const BUFFERED_BODY: u64 = 64 * 1024;

/// Why a body could not be read whole.
enum BodyRead {
    /// It failed or ended short of its length.
    Failed,
    /// Nothing more of it arrived for the idle timeout.
    Stalled,
}

/// Reads the body into `out` until it ends (true) or `out` holds more than
/// [`BUFFERED_BODY`] bytes (false: the rest is still to come). Waits at
/// most `idle` for each piece, as nginx's `client_body_timeout` does: a
/// slow client that keeps sending is not cut.
async fn read_small<B>(
    body: &mut Option<B>,
    out: &mut Vec<u8>,
    idle: Duration,
) -> Result<bool, BodyRead>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt as _;
    let Some(b) = body.as_mut() else {
        return Ok(true);
    };
    while (out.len() as u64) <= BUFFERED_BODY {
        let frame = tokio::time::timeout(idle, b.frame())
            .await
            .map_err(|_| BodyRead::Stalled)?;
        match frame {
            None => {
                *body = None;
                return Ok(true);
            }
            Some(Ok(frame)) => {
                // Trailers are dropped, as when a body is streamed.
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return Err(BodyRead::Failed),
        }
    }
    Ok(false)
}

/// Records a request the client failed (a body cut short or too slow),
/// then answers it.
fn client_failed(
    group: &Group,
    started: Instant,
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &RequestId<'_>,
) -> Response<ProxyBody> {
    group.stats.record(
        crate::now_millis(),
        Outcome::Failed(Failure::Downstream),
        started.elapsed(),
    );
    error(status, code, message, &request_id.header())
}

fn no_backend(table: &RouteTable, request_id: &RequestId<'_>) -> Response<ProxyBody> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_backend",
        &format!("no ready instance of `{}`", table.service),
        &request_id.header(),
    )
}

/// A pooled connection that is still open, or a new one. Failed connects
/// count towards ejection.
async fn ready_connection(
    backend: &Backend,
    router: &Router,
    opts: &ProxyOptions,
) -> Result<Conn, ()> {
    if let Some(c) = pool::checkout(backend.addr) {
        return Ok(c);
    }
    match Conn::connect(backend.addr, opts.connect_timeout).await {
        Ok(c) => Ok(c),
        Err(_) => {
            router.connect_failed(backend);
            backend.stats.record(Outcome::Failed(Failure::Upstream));
            Err(())
        }
    }
}

/// The answer of a backend: `opts.response_timeout` also bounds each wait
/// for more of its body (as nginx's `proxy_read_timeout` does).
#[allow(clippy::too_many_arguments)]
fn respond(
    head: client::Head,
    conn: Conn,
    in_flight: InFlight,
    gauge: hatoba_metrics::InFlight,
    group: &Group,
    table: &RouteTable,
    started: Instant,
    opts: &ProxyOptions,
) -> Answer {
    let sticky = (table.sticky && group.weight > 0)
        .then(|| {
            HeaderValue::from_str(&format!(
                "{STICKY_COOKIE}={}; Path=/; HttpOnly",
                group.version
            ))
            .ok()
        })
        .flatten();
    let long_lived = head
        .headers()
        .any(|(name, value)| name.eq_ignore_ascii_case(b"content-type") && is_event_stream(value));
    let body = Tracked::new(
        conn,
        head.framing,
        head.keep_alive,
        in_flight,
        Arc::clone(&group.stats),
        gauge,
        head.status.as_u16(),
        started,
        opts.response_timeout,
        long_lived,
    );
    Answer::Relayed(Relayed { head, sticky, body })
}

/// What [`proxy`] answers.
pub(crate) enum Answer {
    /// A backend's answer, relayed.
    Relayed(Relayed),
    /// An answer the proxy made itself (an error).
    Made(Response<ProxyBody>),
}

/// A backend's answer on its way to the client.
pub(crate) struct Relayed {
    /// Its head as received, hop-by-hop headers included: whoever writes it
    /// leaves those out.
    pub(crate) head: client::Head,
    /// The `Set-Cookie` that keeps the client on this version, when sticky
    /// sessions are on.
    pub(crate) sticky: Option<HeaderValue>,
    pub(crate) body: Tracked,
}

impl From<Response<ProxyBody>> for Answer {
    fn from(made: Response<ProxyBody>) -> Answer {
        Answer::Made(made)
    }
}

impl Answer {
    /// The answer as hyper's server wants it.
    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        match self {
            Answer::Made(made) => made,
            Answer::Relayed(Relayed { head, sticky, body }) => {
                let mut headers = head.header_map();
                remove_hop_by_hop(&mut headers);
                if let Some(cookie) = sticky {
                    headers.append(header::SET_COOKIE, cookie);
                }
                let mut response = Response::new(Either::Left(body));
                *response.status_mut() = head.status;
                *response.headers_mut() = headers;
                response
            }
        }
    }
}

/// The group for this request: pinned by header, kept by sticky cookie, or
/// by weight. A group without a usable backend gives way to one that has.
fn choose_group<'t>(
    table: &'t RouteTable,
    headers: Headers<'_>,
    pin: Option<&[u8]>,
    router: &Router,
    now: u64,
) -> Option<&'t Group> {
    let pinned = pin
        .map(<[u8]>::trim_ascii)
        .and_then(|v| {
            Role::ALL
                .into_iter()
                .find(|role| v.eq_ignore_ascii_case(role.as_str().as_bytes()))
        })
        .and_then(|role| table.by_role(role));
    let sticky = || {
        if !table.sticky {
            return None;
        }
        cookie(headers, STICKY_COOKIE).and_then(|v| table.by_version(v))
    };
    let chosen = pinned
        .or_else(sticky)
        .or_else(|| table.by_weight(crate::rand_below(100)));
    match chosen {
        Some(g) if usable(g, router, now) => Some(g),
        _ => table
            .groups
            .iter()
            .filter(|g| g.weight > 0)
            .find(|g| usable(g, router, now))
            .or(chosen),
    }
}

/// Another group than `current` with a backend not yet tried and not
/// ejected, those with weight first.
fn other_group<'t>(
    table: &'t RouteTable,
    current: &Group,
    tried: &Tried,
    router: &Router,
    now_ms: u64,
) -> Option<&'t Group> {
    let candidate = |g: &&Group| {
        !std::ptr::eq(*g, current)
            && g.backends
                .iter()
                .any(|b| !tried.contains(&b.addr) && !router.is_ejected(b, now_ms))
    };
    table
        .groups
        .iter()
        .filter(|g| g.weight > 0)
        .find(candidate)
        .or_else(|| table.groups.iter().find(candidate))
}

fn usable(g: &Group, router: &Router, now_ms: u64) -> bool {
    g.backends.iter().any(|b| !router.is_ejected(b, now_ms))
}

/// Power of two choices on in-flight requests among backends not yet tried
/// and not ejected (ejected ones only when nothing else is left).
fn pick_backend<'g>(
    group: &'g Group,
    tried: &Tried,
    router: &Router,
    now_ms: u64,
) -> Option<&'g Arc<Backend>> {
    let fresh = |b: &&Arc<Backend>| !tried.contains(&b.addr);
    let healthy = |b: &&Arc<Backend>| !tried.contains(&b.addr) && !router.is_ejected(b, now_ms);
    let n = group.backends.iter().filter(healthy).count();
    if n > 0 {
        return p2c(group.backends.iter().filter(healthy), n);
    }
    let n = group.backends.iter().filter(fresh).count();
    p2c(group.backends.iter().filter(fresh), n)
}

/// The less loaded of two distinct random picks among the `n` candidates.
fn p2c<'g>(
    candidates: impl Iterator<Item = &'g Arc<Backend>> + Clone,
    n: usize,
) -> Option<&'g Arc<Backend>> {
    match n {
        0 => None,
        1 => candidates.clone().next(),
        _ => {
            let a = crate::rand_below(n as u32) as usize;
            let mut b = crate::rand_below(n as u32 - 1) as usize;
            if b >= a {
                b += 1;
            }
            let x = candidates.clone().nth(a)?;
            let y = candidates.clone().nth(b)?;
            Some(if y.in_flight() < x.in_flight() { y } else { x })
        }
    }
}

pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str().as_bytes())
}

/// True for the headers meaningful for one connection only (RFC 9110
/// §7.6.1), in any case; the length tells most names apart at once.
pub(crate) fn is_hop_by_hop_name(name: &[u8]) -> bool {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        _ => false,
    }
}

/// Removes the hop-by-hop headers of a response. One pass over the names
/// finds whether there is anything to remove, which there usually is not.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

pub(crate) fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("upgrade"))
        })
}

/// The value of the cookie `name`, from the request's `Cookie` headers.
fn cookie<'h>(headers: Headers<'h>, name: &str) -> Option<&'h str> {
    headers
        .get_all("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn new_request_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let (a, b) = (crate::rand_u64(), crate::rand_u64());
    for (i, c) in id.iter_mut().enumerate() {
        let word = if i < 16 { a } else { b };
        let nibble = (word >> (60 - 4 * (i % 16))) & 0xf;
        *c = HEX[nibble as usize];
    }
    id
}

/// Records a request the proxy answered itself, then answers it.
pub(crate) fn fail(
    group: &Group,
    started: Instant,
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let failure = if status == StatusCode::SERVICE_UNAVAILABLE {
        Failure::Internal
    } else {
        Failure::Upstream
    };
    group.stats.record(
        crate::now_millis(),
        Outcome::FailedWithStatus(failure, status.as_u16()),
        started.elapsed(),
    );
    error(status, code, message, request_id)
}

/// A small JSON error answer: `{"error": "...", "message": "...", "request_id": "..."}`.
pub(crate) fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": code,
        "message": message,
        "request_id": request_id.to_str().unwrap_or(""),
    });
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(X_REQUEST_ID, request_id.clone());
    resp
}
