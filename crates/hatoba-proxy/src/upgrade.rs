//! Protocol upgrades (WebSocket): forwarded on a fresh connection and, on
//! `101 Switching Protocols`, spliced byte for byte both ways until either
//! side closes. The backend stays counted in flight for the tunnel's life,
//! so draining waits for open WebSockets too (up to the drain timeout).
//!
//! The upgrade's request is recorded at the `101`, with the time to it; the
//! tunnel is a long-lived connection of its group (counted open, and in the
//! group's in-flight gauge, while it lives) and its end goes to the
//! long-lived counters with its life: closed by either side is normal, an
//! error on the backend's side (a reset) is abnormal unless the instance was
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
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
        let mut server = Watched {
            io: TokioIo::new(server),
            failed: false,
        };
        let copied = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut server).await;
        let how = match copied {
            Err(_) if server.failed && hold.0.is_removed() => LongLivedEnd::Stopped,
            Err(_) if server.failed => LongLivedEnd::Abnormal,
            // Both sides closed, or the client's side failed.
            _ => LongLivedEnd::Normal,
        };
        open.end(how, opened.elapsed());
        drop(conn);
    });
    Response::from_parts(parts, Either::Right(Full::new(Bytes::new())))
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

/// The backend's side of a tunnel, remembering whether any of its reads or
/// writes failed (the copy's error does not say which side it came from).
struct Watched<T> {
    io: T,
    failed: bool,
}

impl<T> Watched<T> {
    fn watch<R>(&mut self, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(_)) = &polled {
            self.failed = true;
        }
        polled
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        this.watch(polled)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch(polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.watch(polled)
    }
}
