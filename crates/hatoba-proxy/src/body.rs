//! Bodies on both sides of the proxy.
//!
//! `Tracked` wraps a backend's response body on its way to the client: when
//! the body ends it records the request's outcome and latency, returns the
//! upstream connection to the pool and releases the backend's in-flight
//! count; if the client goes away first, the request is recorded as a
//! downstream failure and the connection is closed.

use crate::pool::{self, Sender};
use crate::table::InFlight;
use bytes::Bytes;
use hatoba_metrics::{Failure, GroupStats, Outcome};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;

/// What goes upstream: the client's body, or nothing (a replayed request).
pub(crate) type UpBody = Either<Incoming, Empty<Bytes>>;

/// What goes to the client: a backend's body, or an answer the proxy made.
pub type ProxyBody = Either<Tracked, Full<Bytes>>;

/// A backend's response body, with the bookkeeping done when it ends.
pub struct Tracked {
    inner: Incoming,
    conn: Option<Sender>,
    in_flight: Option<InFlight>,
    group: Arc<GroupStats>,
    /// Counts the request in the group's in-flight gauge until the body ends.
    _gauge: hatoba_metrics::InFlight,
    status: u16,
    started: Instant,
    done: bool,
}

impl Tracked {
    pub(crate) fn new(
        inner: Incoming,
        conn: Sender,
        in_flight: InFlight,
        group: Arc<GroupStats>,
        gauge: hatoba_metrics::InFlight,
        status: u16,
        started: Instant,
    ) -> Tracked {
        Tracked {
            inner,
            conn: Some(conn),
            in_flight: Some(in_flight),
            group,
            _gauge: gauge,
            status,
            started,
            done: false,
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        let latency = self.started.elapsed();
        let now = crate::now_millis();
        self.group.record(now, outcome, latency);
        if let Some(f) = self.in_flight.take() {
            f.0.stats.record(outcome);
            let reusable = matches!(outcome, Outcome::Status(_)) && !f.0.is_removed();
            if let Some(conn) = self.conn.take()
                && reusable
            {
                pool::checkin(f.0.addr, conn);
            }
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(Outcome::Status(this.status)),
            Poll::Ready(Some(Err(_))) => this.finish(Outcome::Failed(Failure::Upstream)),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.done {
            // hyper drops a body it has fully written without polling past
            // the end when the length was known; that is a success.
            if self.inner.is_end_stream() {
                self.finish(Outcome::Status(self.status));
            } else {
                self.conn = None;
                self.finish(Outcome::Failed(Failure::Downstream));
            }
        }
    }
}
