//! Protocol upgrades (WebSocket): forwarded on a fresh connection and, on
//! `101 Switching Protocols`, spliced byte for byte both ways until both
//! sides have closed ([`splice`]: each side's close is passed on as a
//! half-close and the other direction goes on, a little while at most, so a
//! close frame sent just before a close always reaches the other side). The
//! backend stays counted in flight for the tunnel's life, so draining waits
//! for open WebSockets too (up to the drain timeout).
//!
//! The upgrade's request is recorded at the `101`, with the time to it; the
//! tunnel is a long-lived connection of its group (counted open, and in the
//! group's in-flight gauge, while it lives) and its end goes to the
//! long-lived counters with its life: closed by either side is normal, an
//! error on the backend's side (a reset before its close) is abnormal unless the instance was
//! already out of the route (Hatoba drained and stopped it), and a tunnel
//! cut by the proxy's own stop (its task dropped) counts as stopped.

use crate::body::ProxyBody;
use crate::forward::{ProxyOptions, error, fail};
use crate::table::{Group, InFlight, Router};
use bytes::Bytes;
use hatoba_metrics::{LongLivedEnd, Outcome};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

pub(crate) async fn forward(
    mut req: Request<Incoming>,
    router: &Router,
    group: &Group,
    peer: SocketAddr,
    opts: &ProxyOptions,
    request_id: HeaderValue,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let Some(backend) = group.backends.iter().min_by_key(|b| b.in_flight()).cloned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_backend",
            "no ready instance",
            &request_id,
        );
    };
    let upgrade_to = req.headers().get(header::UPGRADE).cloned();
    let client_side = hyper::upgrade::on(&mut req);
    let in_flight = InFlight::new(Arc::clone(&backend));
    let Ok(mut conn) = connect(backend.addr, opts.connect_timeout).await else {
        router.connect_failed(&backend);
        return fail(
            group,
            started,
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            "the instance could not be reached",
            &request_id,
        );
    };
    let mut up = Request::new(Empty::<Bytes>::new());
    *up.method_mut() = req.method().clone();
    *up.uri_mut() = req.uri().path_and_query().map_or_else(
        || hyper::Uri::from_static("/"),
        |pq| hyper::Uri::from(pq.clone()),
    );
    *up.version_mut() = Version::HTTP_11;
    *up.headers_mut() = req.headers().clone();
    let ip = peer.ip().to_string();
    if let Ok(v) = HeaderValue::from_str(&ip) {
        up.headers_mut().insert("x-forwarded-for", v);
    }
    up.headers_mut().insert("x-request-id", request_id.clone());
    if let Some(u) = upgrade_to {
        up.headers_mut().insert(header::UPGRADE, u);
        up.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let resp = match tokio::time::timeout(opts.response_timeout, conn.send_request(up)).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => {
            return fail(
                group,
                started,
                StatusCode::BAD_GATEWAY,
                "upstream_reset",
                "the instance closed the connection before answering",
                &request_id,
            );
        }
        Err(_) => {
            return fail(
                group,
                started,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "no answer in time",
                &request_id,
            );
        }
    };
    let status = resp.status();
    group.stats.record(
        crate::now_millis(),
        Outcome::Status(status.as_u16()),
        started.elapsed(),
    );
    backend.stats.record(Outcome::Status(status.as_u16()));
    let (parts, body) = resp.into_parts();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // Not upgraded: relay the answer (small: upgrade refusals are).
        use http_body_util::BodyExt as _;
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Response::from_parts(parts, Either::Right(Full::new(bytes)));
    }
    let mut upstream_resp = Response::from_parts(parts.clone(), body);
    let server_side = hyper::upgrade::on(&mut upstream_resp);
    let stats = Arc::clone(&group.stats);
    tokio::spawn(async move {
        let hold = in_flight;
        let (Ok(client), Ok(server)) = (client_side.await, server_side.await) else {
            return;
        };
        let open = stats.open_long_lived();
        let _gauge = stats.start();
        let opened = Instant::now();
        let ended = splice(TokioIo::new(client), TokioIo::new(server), LINGER).await;
        let how = match ended {
            Spliced::ServerFailed if hold.0.is_removed() => LongLivedEnd::Stopped,
            Spliced::ServerFailed => LongLivedEnd::Abnormal,
            // Both sides closed, or the client's side failed.
            Spliced::Closed => LongLivedEnd::Normal,
        };
        open.end(how, opened.elapsed());
        drop(conn);
    });
    Response::from_parts(parts, Either::Right(Full::new(Bytes::new())))
}

/// How long a tunnel one side of which has ended (its end passed on as a
/// half-close) waits for the other side to end too before it is dropped.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// At most this much is read and thrown away from a side whose peer can no
/// longer be written to, while the tunnel lingers.
const DISCARD_MAX: usize = 256 * 1024;

/// How a tunnel ended, for the long-lived counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spliced {
    /// Both sides closed, or the client's side failed or lingered.
    Closed,
    /// The server's side failed (a reset) before it had ended its output.
    ServerFailed,
}

/// How one direction of a tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pumped {
    /// Reading ended with the side's end of output (`true`), or an error.
    eof: bool,
    /// A write to the other side failed.
    write_failed: bool,
}

/// Copies `client` and `server` to each other until both have ended.
///
/// Each direction is its own: the end of one side's output is passed on as
/// a half-close (`shutdown(Write)`, after everything read before it was
/// written), and the other direction goes on, so a WebSocket's closing
/// handshake completes whichever side closes first. A side that can no
/// longer be written to (its peer reset) does not stop the other direction:
/// what its peer sends is read and thrown away (up to [`DISCARD_MAX`]), so
/// the tunnel never drops a socket with data unread in its receive buffer,
/// which makes the kernel send a reset that can take with it what that
/// peer had not read yet (a close frame). Once one direction has ended,
/// the other gets at most `linger` to end too.
pub(crate) async fn splice<C, S>(client: C, server: S, linger: Duration) -> Spliced
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = tokio::io::split(server);
    let up = pump(client_read, server_write);
    let down = pump(server_read, client_write);
    tokio::pin!(up, down);
    let (up, down) = tokio::select! {
        u = &mut up => (Some(u), tokio::time::timeout(linger, down).await.ok()),
        d = &mut down => (tokio::time::timeout(linger, up).await.ok(), Some(d)),
    };
    // The server failed when reading from it did, or when writing to it did
    // before it had said it was done (a write after its close is refused
    // by a server that closed politely, not one that failed).
    let server_eof = down.is_some_and(|d| d.eof);
    let read_failed = down.is_some_and(|d| !d.eof);
    let write_failed = up.is_some_and(|u| u.write_failed);
    if read_failed || (write_failed && !server_eof) {
        Spliced::ServerFailed
    } else {
        Spliced::Closed
    }
}

/// One direction: reads `from` until its end or an error, writing what it
/// reads to `to`, then passes the end on as a half-close. Once a write to
/// `to` failed, what `from` sends is read and thrown away, up to
/// [`DISCARD_MAX`] bytes.
async fn pump<R, W>(mut from: R, mut to: W) -> Pumped
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut write_failed = false;
    let mut discarded = 0usize;
    let eof = loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break true,
            Ok(n) => n,
            Err(_) => break false,
        };
        if write_failed {
            discarded += n;
            if discarded > DISCARD_MAX {
                break false;
            }
        } else if to.write_all(&buf[..n]).await.is_err() {
            write_failed = true;
        }
    };
    if !write_failed {
        // Flushes first; the other side then reads to its end.
        let _ = to.shutdown().await;
    }
    Pumped { eof, write_failed }
}

/// A connection of its own for the upgrade, driven by hyper (whose upgrade
/// machinery hands over the socket after the 101).
async fn connect(
    addr: SocketAddr,
    timeout: std::time::Duration,
) -> Result<SendRequest<Empty<Bytes>>, ()> {
    let stream = crate::client::connect_tcp(addr, timeout)
        .await
        .map_err(|_| ())?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|_| ())?;
    tokio::spawn(async move {
        // Ends when the backend closes or the last sender is dropped.
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}
