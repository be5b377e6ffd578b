//! The HTTP API v1: an axum `Router` (`routes`) over the operations layer,
//! served on loopback by the accept loop below, which keeps the limits of
//! invariant 11 (at most [`MAX_API_CONNECTIONS`] connections, the oldest
//! silent one evicted for a new one, the head within [`API_HEADER_TIMEOUT`],
//! the whole exchange within [`API_REQUEST_TIMEOUT`], one request per
//! connection, bodies of at most [`MAX_BODY`] bytes read strictly). An
//! event stream (`stream`) leaves those places and that limit once it
//! streams, for its own ([`MAX_EVENT_STREAMS`], a heartbeat, a send
//! timeout).
//!
//! This layer only translates: a request into an operation's typed input,
//! its `Result` into an answer. Every error answer, the router's and the
//! body reader's included, is one JSON shape (`hatoba_api::ApiError`,
//! `error`); the token is checked by `auth`; `openapi` is the document of
//! all of it, generated from the handlers. No rule of an operation lives
//! here.

mod auth;
mod envs;
mod error;
pub mod openapi;
mod reads;
mod routes;
mod stream;

use crate::server::Server;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
pub(crate) use stream::MAX_EVENT_STREAMS;
use stream::{ConnState, Phase, Timer};

/// Largest API request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// API connections served at once; one more is closed at accept.
pub(crate) const MAX_API_CONNECTIONS: usize = 128;
/// How long a client may take to send a request's head after connecting.
pub(crate) const API_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long one API connection may last, request and answer.
pub(crate) const API_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The kernel's send buffer of one API connection. Answers are small; an
/// event stream whose client stops reading holds this much (the kernel
/// doubles it) before it can take no more and its send timeout runs,
/// where the kernel's autotuning would let each grow to 4 MiB.
const API_SEND_BUFFER: usize = 64 * 1024;
/// The pause after an accept that failed (out of file descriptors).
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The limits of the API's accept loop that an embedder may choose; the
/// others are constants above. `Default` is what `hatoba up` serves with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// A streaming client that takes nothing (heartbeats included) for this
    /// long is cut (60 s by default).
    pub stream_send_timeout: std::time::Duration,
    /// An event stream with nothing to say sends a heartbeat this often
    /// (15 s by default); keep it well within `stream_send_timeout`, or a
    /// client that reads is cut too.
    pub stream_heartbeat: std::time::Duration,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        ApiLimits {
            stream_send_timeout: stream::STREAM_SEND_TIMEOUT,
            stream_heartbeat: stream::HEARTBEAT_EVERY,
        }
    }
}

impl Server {
    /// Serves the API on `listener` until `shutdown` resolves.
    ///
    /// Limits, like the proxy's, so no client (the API needs a token, but
    /// connecting does not) can starve the controller: at most
    /// [`MAX_API_CONNECTIONS`] at once, one request per connection (the CLI
    /// opens one per call), its head within [`API_HEADER_TIMEOUT`] of
    /// connecting and the whole exchange within [`API_REQUEST_TIMEOUT`],
    /// bodies of at most 64 KiB. When all the places are taken, the oldest
    /// connection that has not sent a request yet (idle, or a slowloris
    /// trickling its head) is closed to make room, so an operator's
    /// `hatoba status` is served even under a flood of silent connections;
    /// only when every place is busy answering is a new one closed. Out of
    /// file descriptors, accepting pauses instead of spinning.
    pub async fn serve_api(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        self.serve_api_with(listener, shutdown, ApiLimits::default())
            .await;
    }

    /// [`Server::serve_api`] with chosen [`ApiLimits`]. Through the same
    /// front as `hatoba up`'s ([`crate::Environments::serve_api`]), so it
    /// answers the same: a `?env=` naming another environment is refused.
    pub async fn serve_api_with(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
        limits: ApiLimits,
    ) {
        let one = Arc::new(crate::server::Environments::of_one(self));
        serve(envs::app(one), listener, shutdown, limits).await;
    }
}

/// Serves the API of `hatoba up`'s environments on `listener` until `shutdown`
/// resolves, with the limits of [`Server::serve_api`]; `envs` sends each
/// request to its environment's server.
pub(crate) async fn serve_environments(
    environments: Arc<crate::server::Environments>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve(
        envs::app(environments),
        listener,
        shutdown,
        ApiLimits::default(),
    )
    .await;
}

/// The accept loop of [`Server::serve_api`], over any router.
async fn serve<A>(
    app: A,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    limits: ApiLimits,
) where
    A: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    A::Future: Send,
{
    struct Open {
        /// Whether a request head arrived on it, and whether it streams.
        state: Arc<ConnState>,
        task: tokio::task::AbortHandle,
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut open: std::collections::VecDeque<Open> = std::collections::VecDeque::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // EMFILE and the like: the next accept would fail
                        // the same way at once.
                        if !matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                        ) {
                            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        }
                        continue;
                    }
                };
                // Best effort: a socket that refuses keeps the default.
                let _ = socket2::SockRef::from(&stream).set_send_buffer_size(API_SEND_BUFFER);
                // A stream leaves the places: it has its own.
                open.retain(|o| !o.task.is_finished() && o.state.phase() != Phase::Streaming);
                if open.len() >= MAX_API_CONNECTIONS {
                    let silent = open
                        .iter()
                        .position(|o| o.state.phase() == Phase::Silent);
                    match silent.and_then(|i| open.remove(i)) {
                        Some(oldest) => oldest.task.abort(),
                        None => {
                            // Every place is answering a request.
                            drop(stream);
                            continue;
                        }
                    }
                }
                let state = Arc::new(ConnState::new(limits));
                let app = app.clone();
                let shared = Arc::clone(&state);
                let task = tokio::spawn(async move {
                    let conn_state = Arc::clone(&shared);
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        shared.asked();
                        let mut req = req.map(axum::body::Body::new);
                        // The stream handler marks its connection streaming.
                        req.extensions_mut().insert(Arc::clone(&shared));
                        tower::ServiceExt::oneshot(app.clone(), req)
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(API_HEADER_TIMEOUT)
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), svc);
                    let mut conn = std::pin::pin!(conn);
                    let timer = tokio::time::sleep(stream::first_timer(limits.stream_send_timeout));
                    let mut timer = std::pin::pin!(timer);
                    loop {
                        tokio::select! {
                            _ = &mut conn => break,
                            () = &mut timer => match stream::on_timer(conn_state.phase(), conn_state.age(), conn_state.quiet_for(), limits.stream_send_timeout) {
                                Timer::Cut => break,
                                Timer::Again(after) => timer.as_mut().reset(tokio::time::Instant::now() + after),
                            },
                        }
                    }
                });
                open.push_back(Open {
                    state,
                    task: task.abort_handle(),
                });
            }
        }
    }
}
