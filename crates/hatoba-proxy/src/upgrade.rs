//! Protocol upgrades (WebSocket): forwarded on a fresh connection and, on
//! `101 Switching Protocols`, spliced byte for byte both ways until either
//! side closes. The backend stays counted in flight for the tunnel's life,
//! so draining waits for open WebSockets too (up to the drain timeout).

use crate::body::ProxyBody;
use crate::forward::{ProxyOptions, error, fail};
use crate::table::{Group, InFlight, Router};
use bytes::Bytes;
use hatoba_metrics::Outcome;
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
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
    tokio::spawn(async move {
        let _hold = in_flight;
        let (Ok(client), Ok(server)) = (client_side.await, server_side.await) else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(server))
            .await;
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
