//! Bodies on both sides of the proxy.
//!
//! `Tracked` is a backend's response body on its way to the client, read
//! from the upstream connection as the client side asks for it. When the
//! body ends it records the request's outcome and latency, returns the
//! upstream connection to the pool and releases the backend's in-flight
//! count; if the client goes away first, the request is recorded as a
//! downstream failure and the connection is closed. A backend that stops
//! sending mid-body for longer than the idle timeout fails the request as an
//! upstream failure, and the client's answer is cut (never passed off as
//! whole).
//!
//! An event stream (`Content-Type: text/event-stream`) is a long-lived
//! response: its request is recorded when its head arrives, with the time to
//! that head, and its end goes to the group's long-lived counters with its
//! life, never to the request latency: a client that leaves ends it
//! normally, an upstream that cuts it ends it abnormally, unless the
//! instance was already out of the route (Hatoba drained and stopped it).

use crate::client::{Conn, Framing};
use crate::pool;
use crate::table::InFlight;
use bytes::Bytes;
use hatoba_metrics::{Failure, GroupStats, LongLived, LongLivedEnd, Outcome};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// What goes to the client: a backend's body, or an answer the proxy made.
pub type ProxyBody = Either<Tracked, Full<Bytes>>;

/// A backend's response body, with the bookkeeping done when it ends.
#[derive(Debug)]
pub struct Tracked {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    in_flight: Option<InFlight>,
    group: Arc<GroupStats>,
    /// Counts the request in the group's in-flight gauge until the body ends.
    _gauge: hatoba_metrics::InFlight,
    status: u16,
    started: Instant,
    done: bool,
    /// The longest wait for more of the body.
    idle: Duration,
    /// Armed the first time the body has to wait; reset by every piece.
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// Set for an event stream: its open guard and when its head came.
    long_lived: Option<(LongLived, Instant)>,
}

/// Whether a `Content-Type` value names an event stream (parameters and
/// case aside).
pub(crate) fn is_event_stream(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    essence.eq_ignore_ascii_case(b"text/event-stream")
}

impl Tracked {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        conn: Conn,
        framing: Framing,
        keep_alive: bool,
        in_flight: InFlight,
        group: Arc<GroupStats>,
        gauge: hatoba_metrics::InFlight,
        status: u16,
        started: Instant,
        idle: Duration,
        long_lived: bool,
    ) -> Tracked {
        let long_lived = long_lived.then(|| {
            // The request is over for latency's sake: its head came.
            let outcome = Outcome::Status(status);
            group.record(crate::now_millis(), outcome, started.elapsed());
            in_flight.0.stats.record(outcome);
            (group.open_long_lived(), Instant::now())
        });
        Tracked {
            conn: Some(conn),
            framing,
            keep_alive,
            in_flight: Some(in_flight),
            group,
            _gauge: gauge,
            status,
            started,
            done: false,
            idle,
            idle_timer: None,
            long_lived,
        }
    }

    fn ended(&self) -> bool {
        self.framing.is_done()
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some((guard, opened)) = self.long_lived.take() {
            let removed = self.in_flight.as_ref().is_some_and(|f| f.0.is_removed());
            guard.end(long_lived_end(outcome, removed), opened.elapsed());
        } else {
            let latency = self.started.elapsed();
            let now = crate::now_millis();
            self.group.record(now, outcome, latency);
            if let Some(f) = &self.in_flight {
                f.0.stats.record(outcome);
            }
        }
        if let Some(f) = self.in_flight.take() {
            let reusable = matches!(outcome, Outcome::Status(_))
                && self.keep_alive
                && self.ended()
                && !f.0.is_removed();
            if let Some(conn) = self.conn.take()
                && reusable
                && conn.is_clean()
            {
                pool::checkin(f.0.addr, conn);
            }
        }
    }
}

/// How a long-lived response ended, given how its body ended and whether
/// its instance was out of the route by then.
pub(crate) fn long_lived_end(outcome: Outcome, removed: bool) -> LongLivedEnd {
    match outcome.failure() {
        Some(Failure::Upstream) if removed => LongLivedEnd::Stopped,
        Some(Failure::Upstream) => LongLivedEnd::Abnormal,
        // The client left, or the proxy failed on its own: neither says
        // anything about the version.
        Some(Failure::Downstream | Failure::Internal) | None => LongLivedEnd::Normal,
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let Poll::Ready(polled) = conn.poll_body(cx, &mut this.framing) else {
            let idle = this.idle;
            let timer = this
                .idle_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
            ready!(timer.as_mut().poll(cx));
            this.conn = None;
            this.finish(Outcome::Failed(Failure::Upstream));
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the instance sent nothing more of its answer for {idle:?}"),
            ))));
        };
        if let Some(timer) = this.idle_timer.as_mut() {
            timer.as_mut().reset(Instant::now() + this.idle);
        }
        match polled {
            Some(Ok(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Some(Err(e)) => {
                this.finish(Outcome::Failed(Failure::Upstream));
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.finish(Outcome::Status(this.status));
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.ended()
    }

    fn size_hint(&self) -> SizeHint {
        self.framing.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.done {
            // hyper drops a body it has fully written without polling past
            // the end when the length was known; that is a success.
            if self.ended() {
                self.finish(Outcome::Status(self.status));
            } else {
                self.conn = None;
                self.finish(Outcome::Failed(Failure::Downstream));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_streams_by_content_type() {
        assert!(is_event_stream(b"text/event-stream"));
        assert!(is_event_stream(b" Text/Event-Stream ; charset=utf-8"));
        assert!(!is_event_stream(b"text/plain"));
        assert!(!is_event_stream(b"text/event-streams"));
        assert!(!is_event_stream(b""));
    }

    #[test]
    fn only_an_upstream_cut_while_routed_is_abnormal() {
        let up = Outcome::Failed(Failure::Upstream);
        assert_eq!(long_lived_end(up, false), LongLivedEnd::Abnormal);
        assert_eq!(long_lived_end(up, true), LongLivedEnd::Stopped);
        let down = Outcome::Failed(Failure::Downstream);
        assert_eq!(long_lived_end(down, false), LongLivedEnd::Normal);
        assert_eq!(
            long_lived_end(Outcome::Status(200), false),
            LongLivedEnd::Normal
        );
    }
}
