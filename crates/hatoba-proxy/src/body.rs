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

use crate::client::{Conn, Framing};
use crate::pool;
use crate::table::InFlight;
use bytes::Bytes;
use hatoba_metrics::{Failure, GroupStats, Outcome};
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
    ) -> Tracked {
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
        let latency = self.started.elapsed();
        let now = crate::now_millis();
        self.group.record(now, outcome, latency);
        if let Some(f) = self.in_flight.take() {
            f.0.stats.record(outcome);
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
