//! Answers one request: routing, the knobs (errors, latency, readiness,
//! crash counting) and the response body type.
//!
//! Must not block or lock on the request path: shared state is atomics only.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Config;
use crate::long_lived::{Events, LongLived};
use crate::metrics::Metrics;

/// What a request is answered with: a whole text, or a stream.
pub(crate) type Body = http_body_util::Either<Text, Events>;

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const PROMETHEUS: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
const X_VERSION: HeaderName = HeaderName::from_static("x-version");

/// The server's shared state.
pub(crate) struct App {
    index_body: Bytes,
    error_body: Bytes,
    version: HeaderValue,
    error_rate: f64,
    latency: Duration,
    jitter_nanos: u64,
    ready_at: Instant,
    crash_after: Option<u64>,
    fail_health: bool,
    /// Application requests started so far.
    started: AtomicU64,
    draining: AtomicBool,
    crash: Arc<Notify>,
    metrics: Metrics,
    /// `/ws`, `/stream` and the drain notify.
    pub(crate) long_lived: Arc<LongLived>,
}

impl App {
    /// `cfg` must have passed [`Config::validate`].
    pub(crate) fn new(cfg: &Config, crash: Arc<Notify>) -> Self {
        let label = &cfg.version_label;
        Self {
            index_body: Bytes::from(format!("hatoba-demo-app {label}\n")),
            error_body: Bytes::from(format!("hatoba-demo-app {label}: injected error\n")),
            version: HeaderValue::from_str(label)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            error_rate: cfg.error_rate,
            latency: cfg.latency,
            jitter_nanos: u64::try_from(cfg.jitter.as_nanos()).unwrap_or(u64::MAX),
            ready_at: Instant::now() + cfg.ready_after,
            crash_after: cfg.crash_after,
            fail_health: cfg.fail_health,
            started: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            crash,
            metrics: Metrics::new(),
            long_lived: Arc::new(LongLived::new(label, cfg.tick)),
        }
    }

    /// From now on `/ready` answers 503.
    pub(crate) fn begin_drain(&self) {
        self.draining.store(true, Relaxed);
    }

    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        use http_body_util::Either::{Left, Right};
        // Long-lived endpoints are not application requests either: they
        // are neither counted nor timed.
        match (req.method(), req.uri().path()) {
            (&hyper::Method::GET, "/ws") => {
                return Ok(self.long_lived.websocket(req).map(Right));
            }
            (&hyper::Method::GET, "/stream") => return Ok(self.long_lived.stream().map(Right)),
            (&hyper::Method::POST, "/drain") => {
                self.long_lived.notify();
                return Ok(text(StatusCode::OK, "closing long-lived connections\n").map(Left));
            }
            _ => {}
        }
        let response = match req.uri().path() {
            "/health" | "/health/live" if self.fail_health => {
                text(StatusCode::INTERNAL_SERVER_ERROR, "failing\n")
            }
            "/health" | "/health/live" => text(StatusCode::OK, "ok\n"),
            "/ready" | "/health/ready" if self.draining.load(Relaxed) => {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            }
            "/ready" | "/health/ready" if Instant::now() < self.ready_at => {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
            "/ready" | "/health/ready" => text(StatusCode::OK, "ready\n"),
            "/metrics" => {
                let mut r = Response::new(Text::new(Bytes::from(self.metrics.render())));
                r.headers_mut().insert(CONTENT_TYPE, PROMETHEUS);
                r
            }
            "/" => self.application(true).await,
            _ => self.application(false).await,
        };
        Ok(response.map(Left))
    }

    /// An application request: `/` when `index`, a 404 otherwise.
    async fn application(&self, index: bool) -> Response<Text> {
        let start = Instant::now();
        let _in_flight = self.metrics.start();
        let nth = self.started.fetch_add(1, Relaxed) + 1;
        let mut response = if index {
            let delay = self.delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let fail = self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate;
            let (status, body) = if fail {
                (StatusCode::INTERNAL_SERVER_ERROR, &self.error_body)
            } else {
                (StatusCode::OK, &self.index_body)
            };
            let mut r = Response::new(Text::new(body.clone()));
            *r.status_mut() = status;
            r.headers_mut().insert(CONTENT_TYPE, TEXT);
            r.headers_mut().insert(X_VERSION, self.version.clone());
            r
        } else {
            text(StatusCode::NOT_FOUND, "not found\n")
        };
        self.metrics
            .record(response.status().as_u16(), start.elapsed());
        if self.crash_after == Some(nth) {
            // Crash once this answer has been handed to the connection.
            response.body_mut().crash = Some(CrashOnDrop(Arc::clone(&self.crash)));
        }
        response
    }

    fn delay(&self) -> Duration {
        if self.jitter_nanos == 0 {
            self.latency
        } else {
            self.latency + Duration::from_nanos(rand::random_range(0..=self.jitter_nanos))
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Text> {
    let mut r = Response::new(Text::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, TEXT);
    r
}

/// Signals the crash when dropped, which hyper does once the body is written.
struct CrashOnDrop(Arc<Notify>);

impl Drop for CrashOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// A response body sent in one frame, with an exact length.
pub(crate) struct Text {
    data: Option<Bytes>,
    crash: Option<CrashOnDrop>,
}

impl Text {
    fn new(data: Bytes) -> Self {
        Self {
            data: (!data.is_empty()).then_some(data),
            crash: None,
        }
    }
}

impl hyper::body::Body for Text {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}
