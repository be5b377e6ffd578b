//! `GET /api/v1/events`: the event stream as server-sent events
//! (`hatoba_api::sse`), or with `follow=false` the stored events as one
//! JSON page. The query is read here (strictly: an unknown or repeated
//! parameter is a 400 naming it); the rules are the operations'
//! (`ops::events`).
//!
//! A stream has its own budget, apart from the API's 128 connections
//! (invariant 11): at most [`MAX_EVENT_STREAMS`] at once (one more is a 503),
//! and once it streams its connection leaves the 60 s limit of an
//! exchange: it is [`Phase::Streaming`] in its [`ConnState`], which the
//! accept loop reads. What bounds it instead: a heartbeat every
//! [`HEARTBEAT_EVERY`], and a client that takes nothing of it for
//! [`STREAM_SEND_TIMEOUT`] (not even a heartbeat) is cut (both are
//! `ApiLimits`, which an embedder may choose). Memory stays
//! bounded whatever a client does: a stream holds one frame at a time; a
//! subscriber that falls behind the bus reads the store again.

use super::error::Failure;
use crate::ops::EventsQuery;
use crate::server::Server;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hatoba_api::ErrorKind;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// Event streams open at once, apart from the API's other connections.
pub(crate) const MAX_EVENT_STREAMS: usize = 1024;
/// A comment line at least this often, so proxies and clients see a live
/// stream.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
/// A streaming client that takes nothing (heartbeats included) for this
/// long is cut, as the proxy cuts one that takes nothing of an answer.
pub(crate) const STREAM_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The reconnection delay the stream tells its clients, in milliseconds.
const RETRY_MS: u64 = 2000;

/// Where a connection of the API is in its life, as the accept loop needs
/// to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// No request head yet: the first to be closed for a new connection.
    Silent = 0,
    /// Answering a request: bounded by the exchange's 60 s.
    Asked = 1,
    /// Streaming events: out of the 128 places and the 60 s, bounded by
    /// the stream's own limits.
    Streaming = 2,
}

/// What the accept loop and the handler of a connection's request share.
#[derive(Debug)]
pub(crate) struct ConnState {
    phase: AtomicU8,
    opened: tokio::time::Instant,
    /// Milliseconds from `opened` to when the client's side last took a
    /// frame of the stream.
    last_taken: AtomicU64,
    /// The limits it is served with (its stream's heartbeat).
    pub(crate) limits: super::ApiLimits,
}

impl ConnState {
    pub(crate) fn new(limits: super::ApiLimits) -> ConnState {
        ConnState {
            phase: AtomicU8::new(Phase::Silent as u8),
            opened: tokio::time::Instant::now(),
            last_taken: AtomicU64::new(0),
            limits,
        }
    }

    /// How long since it was accepted.
    pub(crate) fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Silent,
            1 => Phase::Asked,
            _ => Phase::Streaming,
        }
    }

    /// A request head arrived.
    pub(crate) fn asked(&self) {
        let _ = self.phase.compare_exchange(
            Phase::Silent as u8,
            Phase::Asked as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    pub(crate) fn streaming(&self) {
        self.taken();
        self.phase.store(Phase::Streaming as u8, Ordering::Relaxed);
    }

    fn taken(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_taken.store(ms, Ordering::Relaxed);
    }

    /// How long the stream's client has taken nothing.
    pub(crate) fn quiet_for(&self) -> Duration {
        let now = self.opened.elapsed();
        now.saturating_sub(Duration::from_millis(
            self.last_taken.load(Ordering::Relaxed),
        ))
    }
}

/// What the accept loop does with a connection whose timer fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Close it.
    Cut,
    /// Look again after this long.
    Again(Duration),
}

/// When a connection's timer first fires: the sooner of the exchange's
/// limit and the stream's send timeout, so either is kept to time.
pub(crate) fn first_timer(send_timeout: Duration) -> Duration {
    super::API_REQUEST_TIMEOUT.min(send_timeout)
}

/// The rule of a connection's timer, `age` after it was accepted: a
/// request that is not a stream is cut once the exchange's 60 s are over; a
/// stream is cut only once its client has taken nothing for `send_timeout`
/// ([`STREAM_SEND_TIMEOUT`] unless the embedder chose another).
pub(crate) fn on_timer(
    phase: Phase,
    age: Duration,
    quiet_for: Duration,
    send_timeout: Duration,
) -> Timer {
    let limit = super::API_REQUEST_TIMEOUT;
    match phase {
        Phase::Silent | Phase::Asked if age >= limit => Timer::Cut,
        Phase::Silent | Phase::Asked => Timer::Again(limit - age),
        Phase::Streaming if quiet_for >= send_timeout => Timer::Cut,
        Phase::Streaming => Timer::Again(send_timeout - quiet_for),
    }
}

/// How the request asks: its filter and cursor, and whether to stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Asked {
    pub(crate) query: EventsQuery,
    pub(crate) follow: bool,
}

/// Reads the query string and the `Last-Event-ID` header (which wins over
/// `after`: a browser's reconnection sends it with the first URL).
pub(crate) fn read_request(
    query: Option<&str>,
    last_event_id: Option<&[u8]>,
) -> Result<Asked, Failure> {
    let mut q = EventsQuery::default();
    let mut follow = None;
    let mut seen: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k).ok_or_else(|| bad(k, "is not percent-encoded text"))?;
        let value =
            decode(v).ok_or_else(|| bad(&key, "has a value that is not percent-encoded text"))?;
        if seen.contains(&key) {
            return Err(bad(&key, "is given twice"));
        }
        seen.push(key.clone());
        match key.as_str() {
            // `env` as the rest of the API spells it.
            "environment" | "env" => {
                if q.environment.is_some() {
                    return Err(bad(&key, "names the environment a second time"));
                }
                q.environment = Some(value);
            }
            "service" => q.service = Some(value),
            "deployment" => q.deployment = Some(value),
            "after" => {
                q.after = Some(
                    event_id(&value)
                        .ok_or_else(|| bad("after", "is not an event id (a whole number)"))?,
                )
            }
            "limit" => {
                q.limit = Some(
                    value
                        .parse()
                        .map_err(|_| bad("limit", "is not a whole number"))?,
                );
            }
            "follow" => {
                follow = Some(match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad("follow", "is `true` or `false`")),
                });
            }
            _ => {
                return Err(Failure::new(
                    ErrorKind::BadInput,
                    format!("unknown query parameter `{}`", hatoba_core::shown(&key)),
                )
                .hint("GET /api/v1/events takes environment (or env), service, deployment, after, limit and follow")
                .field(Some(key)));
            }
        }
    }
    if let Some(raw) = last_event_id {
        // An empty one too is refused: the document says a number, and a
        // client with nothing yet sends none.
        match std::str::from_utf8(raw).map(str::trim) {
            Ok(text) if event_id(text).is_some() => q.after = event_id(text),
            _ => {
                return Err(Failure::new(
                    ErrorKind::BadInput,
                    format!(
                        "Last-Event-ID `{}` is not an event id (a whole number)",
                        hatoba_core::shown(&String::from_utf8_lossy(raw))
                    ),
                )
                .field(Some("Last-Event-ID".to_owned())));
            }
        }
    }
    let follow = follow.unwrap_or(true);
    if follow && q.limit.is_some() {
        return Err(bad(
            "limit",
            "applies to `follow=false` only: a stream has no end",
        ));
    }
    Ok(Asked { query: q, follow })
}

/// An event id as a client writes it: digits, at most `i64::MAX` (what
/// the store and the document's `int64` hold).
fn event_id(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse::<i64>().ok())
        .flatten()
        .and_then(|id| u64::try_from(id).ok())
}

fn bad(param: &str, what: &str) -> Failure {
    let param = hatoba_core::shown(param);
    Failure::new(
        ErrorKind::BadInput,
        format!("query parameter `{param}` {what}"),
    )
    .field(Some(param.to_string()))
}

/// A query component, `+` and `%XX` decoded; None if that is not UTF-8 or
/// a `%` is not followed by two hex digits.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The handler of `GET /api/v1/events`.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    summary = "what happens to deployments, live (server-sent events) or as stored (follow=false)",
    description = "By default a stream of server-sent events (`text/event-stream`): each event is a message with `id: <global id>`, `event: <kind>` and `data: <the Event as one line of JSON>`; the stored events after the cursor come first, then each as it is stored, once each, in id order. A comment line `: keep-alive` comes every 15 s. A client resumes after the last id it got with the `Last-Event-ID` header (or `after`), across a restart of the server too: ids come from the history store. A stream has no end and no total time limit; at most 1024 are open at once, and one whose client takes nothing for 60 s is cut. With `follow=false` the answer is the stored events as one JSON page, and ends: the first `limit` after the cursor, or without one the newest `limit`.",
    params(
        ("environment" = Option<String>, Query, description = "only this environment's events (`env` is the same)"),
        ("service" = Option<String>, Query, description = "only this service's events (one the spec has, or had)"),
        ("deployment" = Option<String>, Query, description = "only this deployment's events, `d-...`"),
        ("after" = Option<u64>, Query, description = "the id of the last event the client has: it gets those after it (without one, a stream starts with the first stored event and a page is the newest)"),
        ("follow" = Option<bool>, Query, description = "`true` (the default): stream; `false`: the stored events as one JSON page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "with `follow=false`: at most this many events (default 100)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "what an event stream client sends when it reconnects; wins over `after`"),
    ),
    responses(
        (status = 200, description = "the stream (no end), or with `follow=false` one page", content(
            (hatoba_api::EventPage = "application/json"),
            (hatoba_api::sse::EventMessage = "text/event-stream"),
        )),
        (status = 400, description = "an unknown or repeated parameter, a malformed name, id or cursor, a limit out of range", body = hatoba_api::ApiError),
        (status = 401, description = "missing or wrong token", body = hatoba_api::ApiError),
        (status = 404, description = "no such service or deployment", body = hatoba_api::ApiError),
        (status = 503, description = "the history store cannot be read, or 1024 streams are open", body = hatoba_api::ApiError),
    ),
)]
pub(crate) async fn events(State(s): State<Arc<Server>>, req: Request) -> Response {
    match answer(&s, req).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

async fn answer(s: &Arc<Server>, req: Request) -> Result<Response, Failure> {
    let asked = read_request(
        req.uri().query(),
        req.headers()
            .get("last-event-id")
            .map(HeaderValue::as_bytes),
    )?;
    if !asked.follow {
        let page = s.stored_events(&asked.query).await?;
        return Ok(axum::Json(page).into_response());
    }
    let Ok(permit) = Arc::clone(&s.event_streams).try_acquire_owned() else {
        return Err(Failure::new(
            ErrorKind::Unavailable,
            format!("{MAX_EVENT_STREAMS} event streams are open already"),
        )
        .hint("close one, or read the stored events with `follow=false`"));
    };
    let sub = s.subscribe_events(&asked.query).await?;
    let conn = req.extensions().get::<Arc<ConnState>>().cloned();
    if let Some(c) = &conn {
        c.streaming();
    }
    let heartbeat = conn
        .as_ref()
        .map_or(HEARTBEAT_EVERY, |c| c.limits.stream_heartbeat);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(produce(sub, tx, permit, heartbeat));
    Ok(sse_response(rx, conn))
}

/// A server-sent events answer whose frames come from `rx`.
fn sse_response(rx: tokio::sync::mpsc::Receiver<Bytes>, conn: Option<Arc<ConnState>>) -> Response {
    let body = Body::new(Frames { rx, conn });
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(hatoba_api::sse::CONTENT_TYPE),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx and the like would otherwise hold the stream in their buffers.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Writes a subscription's events as frames, with a heartbeat when there
/// is nothing to say, until the client is gone or the store fails (then the
/// stream ends and the client resumes after the last id it got).
async fn produce(
    mut sub: crate::Subscription,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    heartbeat: Duration,
) {
    if tx
        .send(Bytes::from(hatoba_api::sse::retry(RETRY_MS)))
        .await
        .is_err()
    {
        return;
    }
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            () = tx.closed() => return,
            next = sub.next() => match next {
                Ok(Some(e)) => {
                    beat.reset();
                    hatoba_api::sse::frame(&crate::api::event(&e))
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, last_event_id = sub.last_event_id(), "an event stream ended: the store could not be read; its client resumes after the last id it got");
                    return;
                }
            },
            _ = beat.tick() => hatoba_api::sse::HEARTBEAT.to_owned(),
        };
        if tx.send(Bytes::from(frame)).await.is_err() {
            return;
        }
    }
}

/// `GET /api/v1/services/{name}/logs?follow=true&instance=`: one
/// instance's output as it is written, as server-sent events (`line`
/// messages, a heartbeat when it is quiet), ending when the instance
/// stops. It counts among the event streams (their budget, limits and
/// heartbeat); a client gone drops the runtime's follow.
pub(crate) async fn follow_logs(
    s: &Arc<Server>,
    name: &str,
    q: &crate::ops::LogsQuery,
    conn: Option<Arc<ConnState>>,
) -> Result<Response, Failure> {
    let Ok(permit) = Arc::clone(&s.event_streams).try_acquire_owned() else {
        return Err(Failure::new(
            ErrorKind::Unavailable,
            format!("{MAX_EVENT_STREAMS} streams are open already"),
        )
        .hint("close one, or read on with `after` instead of `follow`"));
    };
    let instance = q.instance.clone().unwrap_or_default();
    let Some(lines) = s.follow_logs(name, q).await? else {
        return Err(Failure::new(
            ErrorKind::BadInput,
            format!(
                "the output of `{}` is kept in a log file, which is not followed as a stream",
                hatoba_core::shown(&instance)
            ),
        )
        .hint("read on from an answer's `offset` with `after` instead"));
    };
    if let Some(c) = &conn {
        c.streaming();
    }
    let heartbeat = conn
        .as_ref()
        .map_or(HEARTBEAT_EVERY, |c| c.limits.stream_heartbeat);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(produce_lines(instance, lines, tx, permit, heartbeat));
    Ok(sse_response(rx, conn))
}

/// Writes a followed output's lines as `line` messages, with a heartbeat
/// when it is quiet, until it ends (the instance stopped: the body ends)
/// or the client is gone (the follow is dropped, and with it the
/// runtime's reading).
async fn produce_lines(
    instance: String,
    mut lines: hatoba_runtime::LogStream,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    heartbeat: Duration,
) {
    use futures_util::StreamExt as _;
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            () = tx.closed() => return,
            next = lines.next() => match next {
                Some(Ok(l)) => {
                    beat.reset();
                    let line = hatoba_api::LogLine {
                        instance: instance.clone(),
                        line: l.line,
                        stderr: l.stderr,
                        offset: l.cursor,
                    };
                    let data = serde_json::to_string(&line).unwrap_or_else(|_| "{}".to_owned());
                    format!("event: line\ndata: {data}\n\n")
                }
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(%instance, "a followed output ended: {e}");
                    return;
                }
            },
            _ = beat.tick() => hatoba_api::sse::HEARTBEAT.to_owned(),
        };
        if tx.send(Bytes::from(frame)).await.is_err() {
            return;
        }
    }
}

/// The body of a stream: the frames as the producer makes them, each
/// noted in the connection's state when the client's side takes it.
struct Frames {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    conn: Option<Arc<ConnState>>,
}

impl HttpBody for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                if let Some(c) = &this.conn {
                    c.taken();
                }
                Poll::Ready(Some(Ok(hyper::body::Frame::data(b))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ok(q: &str) -> Asked {
        read_request(Some(q), None).unwrap()
    }

    fn refused(q: &str, header: Option<&[u8]>) -> hatoba_api::ApiError {
        read_request(Some(q), header).unwrap_err().0
    }

    #[test]
    fn the_query_is_read_with_its_defaults() {
        assert_eq!(
            ok(""),
            Asked {
                query: EventsQuery::default(),
                follow: true
            }
        );
        let a =
            ok("service=web&environment=prod%2Dus&deployment=d-1&after=41&follow=false&limit=5");
        assert!(!a.follow);
        assert_eq!(a.query.service.as_deref(), Some("web"));
        assert_eq!(a.query.environment.as_deref(), Some("prod-us"));
        assert_eq!(a.query.deployment.as_deref(), Some("d-1"));
        assert_eq!((a.query.after, a.query.limit), (Some(41), Some(5)));
        assert_eq!(
            ok("env=staging").query.environment.as_deref(),
            Some("staging")
        );
        assert!(ok("follow=1").follow);
        assert!(!ok("follow=0").follow);
    }

    #[test]
    fn last_event_id_wins_over_after() {
        let a = read_request(Some("after=3"), Some(b"17")).unwrap();
        assert_eq!(a.query.after, Some(17));
        let a = read_request(None, Some(b" 9 ")).unwrap();
        assert_eq!(a.query.after, Some(9));
        let a = read_request(None, Some(b"9223372036854775807")).unwrap();
        assert_eq!(a.query.after, Some(9_223_372_036_854_775_807));
    }

    #[test]
    fn bad_queries_are_400s_naming_the_parameter() {
        for (q, header, field, says) in [
            ("after=-1", None, "after", "not an event id"),
            ("after=1e3", None, "after", "not an event id"),
            (
                "after=99999999999999999999999",
                None,
                "after",
                "not an event id",
            ),
            ("follow=yes", None, "follow", "`true` or `false`"),
            ("limit=ten&follow=false", None, "limit", "whole number"),
            ("limit=10", None, "limit", "follow=false"),
            ("service=a&service=b", None, "service", "twice"),
            ("environment=a&env=b", None, "env", "second time"),
            ("colour=blue", None, "colour", "unknown query parameter"),
            ("service=%zz", None, "service", "percent-encoded"),
            ("service=%ff", None, "service", "percent-encoded"),
            ("", Some(b"".as_slice()), "Last-Event-ID", "not an event id"),
            (
                "",
                Some(b"abc".as_slice()),
                "Last-Event-ID",
                "not an event id",
            ),
            (
                "",
                Some(b"\xff".as_slice()),
                "Last-Event-ID",
                "not an event id",
            ),
        ] {
            let e = refused(q, header);
            assert_eq!(e.kind, ErrorKind::BadInput, "{q}: {e:?}");
            assert_eq!(e.field.as_deref(), Some(field), "{q}: {e:?}");
            assert!(e.message.contains(says), "{q}: {e:?}");
        }
    }

    #[test]
    fn a_stream_outlives_the_exchange_limit_only_while_its_client_takes_frames() {
        let t = STREAM_SEND_TIMEOUT;
        let limit = super::super::API_REQUEST_TIMEOUT;
        let zero = Duration::ZERO;
        assert_eq!(first_timer(t), limit.min(t));
        assert_eq!(on_timer(Phase::Silent, limit, zero, t), Timer::Cut);
        assert_eq!(on_timer(Phase::Asked, limit, zero, t), Timer::Cut);
        assert_eq!(
            on_timer(Phase::Streaming, limit, Duration::from_secs(1), t),
            Timer::Again(t - Duration::from_secs(1))
        );
        assert_eq!(on_timer(Phase::Streaming, limit, t, t), Timer::Cut);
        // A send timeout shorter than the exchange's limit: the timer
        // fires early; an exchange is not cut before its 60 s for it, a
        // stream is.
        let short = Duration::from_secs(1);
        assert_eq!(first_timer(short), short);
        assert_eq!(
            on_timer(Phase::Asked, short, zero, short),
            Timer::Again(limit - short)
        );
        assert_eq!(on_timer(Phase::Streaming, short, short, short), Timer::Cut);
        // A heartbeat comes well within the send timeout, so a client that
        // reads is never quiet that long.
        assert!(HEARTBEAT_EVERY * 2 < STREAM_SEND_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_quiet_from_the_last_frame_its_client_took() {
        let c = ConnState::new(super::super::ApiLimits::default());
        assert_eq!(c.phase(), Phase::Silent);
        c.asked();
        assert_eq!(c.phase(), Phase::Asked);
        tokio::time::advance(Duration::from_secs(10)).await;
        c.streaming();
        assert_eq!(c.phase(), Phase::Streaming);
        // Asked again (it is not) does not move it back.
        c.asked();
        assert_eq!(c.phase(), Phase::Streaming);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(c.quiet_for(), Duration::from_secs(30));
        c.taken();
        assert_eq!(c.quiet_for(), Duration::ZERO);
    }
}
