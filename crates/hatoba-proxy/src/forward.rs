//! The request path: choose a group and a backend, forward, retry what is
//! safe to retry, and answer clean JSON errors when nothing can serve.
//!
//! Retries: a request whose connection could not be made, or that hyper
//! hands back unsent (a pooled connection closed under it), is retried on
//! another backend of the same group, whatever its method. A request that
//! was sent but got no response (the backend was killed mid-request) is
//! retried only when it is idempotent and has no body, as Envoy's `reset`
//! retry policy does. Only upstream failures count against a version.

use crate::body::{ProxyBody, Tracked};
use crate::pool;
use crate::table::{Backend, Group, InFlight, RouteTable, Router};
use crate::tls::TlsSettings;
use bytes::Bytes;
use hatoba_metrics::{Failure, Outcome, Role};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
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
    /// A backend that does not start answering within this gets a 504.
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
}

impl Default for ProxyOptions {
    fn default() -> ProxyOptions {
        ProxyOptions {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(60),
            max_attempts: 3,
            tls: None,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The header that pins a request to a role: `X-Hatoba-Route: canary`.
pub const ROUTE_HEADER: &str = "x-hatoba-route";
const ROUTE_HEADER_NAME: HeaderName = HeaderName::from_static(ROUTE_HEADER);
/// The cookie that keeps a client on one version when sticky sessions are on.
pub const STICKY_COOKIE: &str = "hatoba-version";

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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

/// Forwards one request. Never fails: every problem becomes a response.
pub(crate) async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let (router, opts) = (&*ctx.router, &ctx.opts);
    let now_ms = router.ms_at(started);
    let table = router.table();
    let request_id = match req.headers().get(X_REQUEST_ID) {
        Some(v) => v.clone(),
        None => new_request_id(),
    };
    let Some(group) = choose_group(&table, req.headers(), router, now_ms) else {
        return Ok(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_backend",
            &format!("no ready instance of `{}`", table.service),
            &request_id,
        ));
    };
    if is_upgrade(req.headers()) {
        return Ok(crate::upgrade::forward(req, router, group, peer, opts, request_id).await);
    }
    let gauge = group.stats.start();
    let (mut parts, body) = req.into_parts();
    prepare_upstream_headers(
        &mut parts.headers,
        &parts.uri,
        parts.version,
        peer,
        opts,
        &request_id,
    );
    let uri = origin_form(&parts.uri);
    // A request that was sent but got no answer is replayed on another
    // backend only when it is idempotent and bodiless; keep what that needs
    // (only when there is another backend to replay it on).
    let replayable =
        is_idempotent(&parts.method) && !has_body(&parts.headers) && body_is_empty(&body);
    let replay = (replayable && opts.max_attempts > 1 && group.backends.len() > 1)
        .then(|| (parts.method.clone(), uri.clone(), parts.headers.clone()));
    let mut up = Request::from_parts(parts, Either::Left(body));
    *up.uri_mut() = uri;
    *up.version_mut() = Version::HTTP_11;

    let mut tried = Tried::new();
    let mut last_failure = ("upstream_unreachable", StatusCode::BAD_GATEWAY);
    while tried.len() < opts.max_attempts {
        let now_ms = if tried.len() == 0 {
            now_ms
        } else {
            router.now_ms()
        };
        let Some(backend) = pick_backend(group, &tried, router, now_ms) else {
            break;
        };
        tried.push(backend.addr);
        let in_flight = InFlight::new(Arc::clone(backend));
        let Ok(mut conn) = ready_connection(backend, router, opts).await else {
            continue;
        };
        let sent = tokio::time::timeout(opts.response_timeout, conn.try_send_request(up)).await;
        match sent {
            Ok(Ok(resp)) => {
                router.connect_succeeded(backend);
                return Ok(respond(
                    resp, conn, in_flight, gauge, group, &table, started,
                ));
            }
            Ok(Err(mut e)) => match e.take_message() {
                // Not sent: the connection closed under us. Nothing reached the backend.
                Some(back) => {
                    up = back;
                    tried.pop();
                }
                None => {
                    router.connect_failed(backend);
                    backend.stats.record(Outcome::Failed(Failure::Upstream));
                    if !replayable {
                        return Ok(fail(
                            group,
                            started,
                            StatusCode::BAD_GATEWAY,
                            "upstream_reset",
                            "the instance closed the connection before answering",
                            &request_id,
                        ));
                    }
                    last_failure = ("upstream_reset", StatusCode::BAD_GATEWAY);
                    // Nowhere else to replay it: no copy was kept.
                    let Some((m, u, h)) = &replay else {
                        break;
                    };
                    up = Request::new(Either::Right(Empty::new()));
                    *up.method_mut() = m.clone();
                    *up.uri_mut() = u.clone();
                    *up.version_mut() = Version::HTTP_11;
                    *up.headers_mut() = h.clone();
                }
            },
            Err(_) => {
                backend.stats.record(Outcome::Failed(Failure::Upstream));
                return Ok(fail(
                    group,
                    started,
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    &format!("no answer within {:?}", opts.response_timeout),
                    &request_id,
                ));
            }
        }
    }
    let (code, status) = last_failure;
    Ok(fail(
        group,
        started,
        status,
        code,
        &format!(
            "no instance of `{}` could be reached ({} tried)",
            table.service,
            tried.len()
        ),
        &request_id,
    ))
}

/// A pooled connection that is ready, or a new one. Failed connects count
/// towards ejection.
async fn ready_connection(
    backend: &Backend,
    router: &Router,
    opts: &ProxyOptions,
) -> Result<pool::Sender, ()> {
    while let Some(mut c) = pool::checkout(backend.addr) {
        if c.ready().await.is_ok() {
            return Ok(c);
        }
    }
    match pool::connect(backend.addr, opts.connect_timeout).await {
        Ok(mut c) => match c.ready().await {
            Ok(()) => Ok(c),
            Err(_) => {
                router.connect_failed(backend);
                Err(())
            }
        },
        Err(_) => {
            router.connect_failed(backend);
            backend.stats.record(Outcome::Failed(Failure::Upstream));
            Err(())
        }
    }
}

fn respond(
    resp: Response<Incoming>,
    conn: pool::Sender,
    in_flight: InFlight,
    gauge: hatoba_metrics::InFlight,
    group: &Group,
    table: &RouteTable,
    started: Instant,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    remove_hop_by_hop(&mut parts.headers, false);
    if table.sticky
        && group.weight > 0
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{STICKY_COOKIE}={}; Path=/; HttpOnly",
            group.version
        ))
    {
        parts.headers.append(header::SET_COOKIE, v);
    }
    let status = parts.status.as_u16();
    let tracked = Tracked::new(
        body,
        conn,
        in_flight,
        Arc::clone(&group.stats),
        gauge,
        status,
        started,
    );
    Response::from_parts(parts, Either::Left(tracked))
}

/// The group for this request: pinned by header, kept by sticky cookie, or
/// by weight. A group without a usable backend gives way to one that has.
fn choose_group<'t>(
    table: &'t RouteTable,
    headers: &HeaderMap,
    router: &Router,
    now: u64,
) -> Option<&'t Group> {
    let pinned = headers
        .get(ROUTE_HEADER_NAME)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| match v.trim().to_ascii_lowercase().as_str() {
            "stable" => Some(Role::Stable),
            "canary" => Some(Role::Canary),
            "preview" => Some(Role::Preview),
            _ => None,
        })
        .and_then(|role| table.by_role(role));
    let sticky = || {
        if !table.sticky {
            return None;
        }
        cookie(headers, STICKY_COOKIE).and_then(|v| table.by_version(&v))
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

fn prepare_upstream_headers(
    headers: &mut HeaderMap,
    uri: &Uri,
    version: Version,
    peer: SocketAddr,
    opts: &ProxyOptions,
    request_id: &HeaderValue,
) {
    remove_hop_by_hop(headers, true);
    if version == Version::HTTP_2
        && !headers.contains_key(header::HOST)
        && let Some(a) = uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        headers.insert(header::HOST, v);
    }
    // "<previous>, <ip>" or "<ip>", written without a temporary String.
    let mut ip = [0u8; 48];
    let ip = {
        use std::io::Write as _;
        let mut w = &mut ip[..];
        let _ = write!(w, "{}", peer.ip());
        let left = w.len();
        &ip[..ip.len() - left]
    };
    let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip);
            HeaderValue::from_maybe_shared(Bytes::from(v))
        }
        None => HeaderValue::from_bytes(ip),
    };
    if let Ok(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if opts.tls.is_some() { "https" } else { "http" }),
    );
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Removes the hop-by-hop headers (and, on requests, those the Connection
/// header names). One pass over the names finds whether there is anything
/// to remove, which there usually is not.
fn remove_hop_by_hop(headers: &mut HeaderMap, named_too: bool) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if named_too && headers.contains_key(header::CONNECTION) {
        // Headers named in Connection are hop-by-hop too.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for h in &named {
            headers.remove(h);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) if uri.scheme().is_none() => {
            if uri.authority().is_none() {
                return uri.clone();
            }
            Uri::from(pq.clone())
        }
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn has_body(h: &HeaderMap) -> bool {
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

fn body_is_empty(b: &Incoming) -> bool {
    use hyper::body::Body as _;
    b.is_end_stream()
}

pub(crate) fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("upgrade"))
        })
}

fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let (a, b) = (crate::rand_u64(), crate::rand_u64());
    for (i, c) in id.iter_mut().enumerate() {
        let word = if i < 16 { a } else { b };
        let nibble = (word >> (60 - 4 * (i % 16))) & 0xf;
        *c = HEX[nibble as usize];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
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
