//! The demo service Hatoba deploys in examples, tests and benchmarks: a small,
//! fast HTTP server (HTTP/1.1 and h2c) whose behaviour is set by knobs.
//!
//! Routes:
//!
//! - `/` answers `hatoba-demo-app <version>\n` with an `x-version` header;
//!   the knobs (error rate, latency, jitter) shape these answers.
//! - `/health` is liveness: 200 `ok`, or 500 with [`Config::fail_health`].
//! - `/ready` is readiness: 503 until [`Config::ready_after`] has passed since
//!   [`serve`] started, and again once shutdown began; 200 otherwise.
//! - `/health/live` and `/health/ready` are the same two, as the seeds' API
//!   names them (`examples/seeds-canary` runs this app in their place).
//! - `/metrics` is Prometheus text: `http_requests_total{status="..."}` and the
//!   `http_request_duration_seconds` histogram, and the
//!   `http_requests_in_flight` gauge.
//! - `/ws` is a WebSocket that echoes each message and sends `VERSION tick
//!   N` every [`Config::tick`]; `/stream` an event stream of `data: VERSION
//!   tick N`; `POST /drain` (a drain notify) closes every WebSocket politely
//!   (close frame 1001) and sends every stream `event: reconnect`. At
//!   shutdown WebSockets are closed the same way and streams end after
//!   `event: close`.
//! - anything else is 404.
//!
//! Application requests are every request except the health paths and
//! `/metrics`; only they are counted in the metrics and towards
//! [`Config::crash_after`], so probes and scrapes never change what a test sees.
//!
//! The library never prints and never exits the process: a crash is reported
//! by [`serve`] returning [`Stop::Crashed`]; the binary turns it into exit 1.

mod app;
mod long_lived;
mod metrics;

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::app::App;

/// How the server behaves. Every field has a knob of the same name in the binary.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The version `/` answers with, in its body and `x-version` header.
    pub version_label: String,
    /// The fraction (0.0 to 1.0) of `/` requests answered 500.
    pub error_rate: f64,
    /// Latency added to every `/` request.
    pub latency: Duration,
    /// Extra latency added to every `/` request, drawn uniformly from `0..=jitter`.
    pub jitter: Duration,
    /// How long `/ready` answers 503 after [`serve`] starts.
    pub ready_after: Duration,
    /// Crash after answering this many application requests.
    pub crash_after: Option<u64>,
    /// How long to wait after draining, before [`serve`] returns.
    pub slow_shutdown: Duration,
    /// Make `/health` answer 500.
    pub fail_health: bool,
    /// How often `/ws` and `/stream` send a tick.
    pub tick: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version_label: "v1".to_owned(),
            error_rate: 0.0,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            ready_after: Duration::ZERO,
            crash_after: None,
            slow_shutdown: Duration::ZERO,
            fail_health: false,
            tick: Duration::from_secs(1),
        }
    }
}

/// A knob value the server cannot work with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The error rate is not a fraction.
    #[error("error rate must be between 0.0 and 1.0, found {found}")]
    ErrorRate {
        /// The rate as given.
        found: f64,
    },
    /// The version label cannot be sent in a header.
    #[error("version label must be 1 to 128 visible ASCII characters, found `{found}`")]
    VersionLabel {
        /// The label as given.
        found: String,
    },
    /// Crashing after zero requests would crash before serving anything.
    #[error("crash-after must be at least 1, found 0")]
    CrashAfterZero,
}

impl Config {
    /// Checks every knob, returning the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_error_rate(self.error_rate)?;
        check_version_label(&self.version_label)?;
        if self.crash_after == Some(0) {
            return Err(ConfigError::CrashAfterZero);
        }
        Ok(())
    }
}

/// Checks that `rate` is a fraction between 0.0 and 1.0 (NaN is not).
pub fn check_error_rate(rate: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(ConfigError::ErrorRate { found: rate })
    }
}

/// Checks that `label` is 1 to 128 visible ASCII characters, so it fits a header.
pub fn check_version_label(label: &str) -> Result<(), ConfigError> {
    if !label.is_empty() && label.len() <= 128 && label.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ConfigError::VersionLabel {
            found: label.to_owned(),
        })
    }
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `shutdown` resolved; in-flight requests were finished, then
    /// [`Config::slow_shutdown`] was waited out.
    Shutdown,
    /// [`Config::crash_after`] application requests were answered; every open
    /// connection was dropped without draining.
    Crashed {
        /// How many application requests were answered before the crash.
        requests: u64,
    },
}

/// Serves on `listener` until `shutdown` resolves or the server crashes.
///
/// On shutdown it stops accepting, lets in-flight requests finish, closes
/// keep-alive connections after their current request, waits
/// [`Config::slow_shutdown`], and returns [`Stop::Shutdown`]. On a crash it
/// drops every connection at once and returns [`Stop::Crashed`].
///
/// An invalid `cfg` is an [`io::ErrorKind::InvalidInput`] error.
pub async fn serve(
    listener: TcpListener,
    cfg: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Stop> {
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let crash = Arc::new(Notify::new());
    let app = Arc::new(App::new(&cfg, Arc::clone(&crash)));
    let requests = cfg.crash_after.unwrap_or_default();

    let builder = auto::Builder::new(TokioExecutor::new());
    // Set at shutdown: every connection finishes its current request and
    // closes (what hyper-util's graceful shutdown does, which cannot watch
    // a connection that may be upgraded).
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = crash.notified() => return Ok(crashed(connections, requests).await),
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small answers: do not wait to coalesce them.
                    let _ = stream.set_nodelay(true);
                    let app = Arc::clone(&app);
                    let service = service_fn(move |req| {
                        let app = Arc::clone(&app);
                        async move { app.handle(req).await }
                    });
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let mut stop = stop.clone();
                    connections.spawn(async move {
                        let mut conn = pin!(conn);
                        // A connection error is the client's business (reset, bad request).
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
                        }
                        let _ = conn.await;
                    });
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }

    drop(listener);
    app.begin_drain();
    app.long_lived.close();
    let _ = stopping.send(true);
    let finished = async {
        while connections.join_next().await.is_some() {}
        app.long_lived.closed().await;
    };
    let crashed_now = tokio::select! {
        biased;
        () = crash.notified() => true,
        () = finished => false,
    };
    if crashed_now {
        return Ok(crashed(connections, requests).await);
    }
    tokio::time::sleep(cfg.slow_shutdown).await;
    Ok(Stop::Shutdown)
}

/// Serves on `127.0.0.1:port` until the process gets SIGTERM: how an
/// instance started by a runtime (which sets `PORT`) runs the demo app.
pub async fn serve_until_sigterm(port: u16, cfg: Config) -> io::Result<Stop> {
    serve_on_until_sigterm(std::net::Ipv4Addr::LOCALHOST.into(), port, cfg).await
}

/// [`serve_until_sigterm`] on another address: `0.0.0.0` in a container,
/// whose published port reaches it from outside its own loopback.
pub async fn serve_on_until_sigterm(
    host: std::net::IpAddr,
    port: u16,
    cfg: Config,
) -> io::Result<Stop> {
    let listener = TcpListener::bind((host, port)).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    serve(listener, cfg, async move {
        term.recv().await;
    })
    .await
}

/// The crash: every connection is dropped without draining. Waiting for the
/// aborted tasks lets the connection that answered the last request finish
/// writing it (an abort takes effect between polls), and guarantees every
/// socket is closed before [`serve`] returns and the binary exits.
async fn crashed(mut connections: JoinSet<()>, requests: u64) -> Stop {
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    Stop::Crashed { requests }
}
