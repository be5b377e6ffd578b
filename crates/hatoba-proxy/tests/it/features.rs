//! Routing features: pinning, sticky sessions, forwarded headers, h2c,
//! WebSocket upgrades, metrics on the admin listener.

use crate::support::{InProcess, Proxy, get, group, spec};
use bytes::Bytes;
use hatoba_metrics::Role;
use hatoba_proxy::{AdminServer, ProxyOptions};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_pins_a_request_to_the_canary() {
    let s = InProcess::start("v1", |_| {}).await;
    let c = InProcess::start("v2", |_| {}).await;
    let proxy = Proxy::start(
        spec(vec![
            group(Role::Stable, "v1", 100, &[s.addr]),
            group(Role::Canary, "v2", 0, &[c.addr]),
        ]),
        ProxyOptions::default(),
    );
    for (header, expect) in [
        (Some("canary"), "v2"),
        (Some("stable"), "v1"),
        (None, "v1"),
        (Some("bogus"), "v1"),
    ] {
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::get("/").header("host", "x");
        if let Some(h) = header {
            req = req.header("x-hatoba-route", h);
        }
        let resp = send
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-version"], expect, "header {header:?}");
    }
    s.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_request_id_reach_the_backend() {
    let backend = crate::support::echo_backend().await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[backend])]),
        ProxyOptions::default(),
    );
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/echo")
        .header("host", "shop.example")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "hop")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let id = resp.headers().get("x-request-id").cloned();
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        body.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1"),
        "{body}"
    );
    assert!(body.contains("x-forwarded-proto: http"), "{body}");
    assert!(body.contains("x-forwarded-host: shop.example"), "{body}");
    assert!(body.contains("host: shop.example"), "{body}");
    assert!(body.contains("x-request-id: "), "{body}");
    assert!(
        !body.contains("x-secret"),
        "a header named in Connection is hop-by-hop: {body}"
    );
    let _ = id;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_served() {
    let s = InProcess::start("v1", |_| {}).await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[s.addr])]),
        ProxyOptions::default(),
    );
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = hyper::Request::get(format!("http://{}/", proxy.addr))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.headers()["x-version"], "v1");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A backend that accepts any upgrade and then echoes bytes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(
            |mut req: hyper::Request<hyper::body::Incoming>| async move {
                tokio::spawn(async move {
                    if let Ok(up) = hyper::upgrade::on(&mut req).await {
                        let mut io = TokioIo::new(up);
                        let mut buf = [0u8; 64];
                        while let Ok(n) = io.read(&mut buf).await {
                            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                });
                let mut resp = hyper::Response::new(http_body_util::Empty::<Bytes>::new());
                *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                resp.headers_mut()
                    .insert("upgrade", "websocket".parse().unwrap());
                resp.headers_mut()
                    .insert("connection", "upgrade".parse().unwrap());
                Ok::<_, std::convert::Infallible>(resp)
            },
        );
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await;
    });
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[backend])]),
        ProxyOptions::default(),
    );
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping over the tunnel").await.unwrap();
    let mut echo = [0u8; 20];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping over the tunnel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_exposes_per_version_metrics_and_routes() {
    let s = InProcess::start("v1", |_| {}).await;
    let c = InProcess::start("v2", |c| c.error_rate = 1.0).await;
    let proxy = Proxy::start(
        spec(vec![
            group(Role::Stable, "v1", 50, &[s.addr]),
            group(Role::Canary, "v2", 50, &[c.addr]),
        ]),
        ProxyOptions::default(),
    );
    let admin = AdminServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::clone(proxy.router.recorder()),
        vec![Arc::clone(&proxy.router)],
    )
    .unwrap();
    let mut conn = None;
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let (status, _) = get(&mut conn, proxy.addr).await.unwrap();
        *statuses.entry(status).or_insert(0u64) += 1;
    }
    let mut aconn = None;
    let _ = get(&mut aconn, admin.local_addr()).await;
    let metrics = crate::support::raw(
        admin.local_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let count = |version: &str, status: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("http_requests_total{")
                    && l.contains(&format!("version=\"{version}\""))
                    && l.contains(&format!("status=\"{status}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(
        count("v1", "200"),
        statuses.get(&200).copied().unwrap_or(0),
        "{metrics}"
    );
    assert_eq!(
        count("v2", "500"),
        statuses.get(&500).copied().unwrap_or(0),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    let routes = crate::support::raw(
        admin.local_addr(),
        b"GET /routes HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        routes.contains("\"role\":\"canary\"") && routes.contains("\"weight\":50"),
        "{routes}"
    );
    admin.shutdown();
    s.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_keep_a_client_on_its_version() {
    let s = InProcess::start("v1", |_| {}).await;
    let c = InProcess::start("v2", |_| {}).await;
    let mut sp = spec(vec![
        group(Role::Stable, "v1", 50, &[s.addr]),
        group(Role::Canary, "v2", 50, &[c.addr]),
    ]);
    sp.sticky = true;
    let proxy = Proxy::start(sp, ProxyOptions::default());
    let send = |cookie: Option<String>| async move {
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::get("/").header("host", "x");
        if let Some(c) = cookie {
            req = req.header("cookie", format!("theme=dark; {c}"));
        }
        let resp = send
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let version = resp.headers()["x-version"].to_str().unwrap().to_owned();
        let set = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        (version, set)
    };
    // 20 new clients at 50/50: all on one version by chance once in 500,000 runs.
    let mut first_versions = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (version, set) = send(None).await;
        first_versions.insert(version.clone());
        let cookie = set.expect("a sticky answer sets its cookie");
        assert_eq!(cookie, format!("hatoba-version={version}"));
        for _ in 0..5 {
            assert_eq!(send(Some(cookie.clone())).await.0, version);
        }
    }
    assert_eq!(
        first_versions.len(),
        2,
        "new clients are still split by weight"
    );
    s.stop().await;
    c.stop().await;
}

/// An HTTP/1.0 request without Host goes upstream as HTTP/1.1 with the
/// upstream's address as Host (RFC 9112 requires one in 1.1), as nginx does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_request_without_host_gets_the_upstreams_host() {
    let backend = crate::support::echo_backend().await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[backend])]),
        ProxyOptions::default(),
    );
    let resp = crate::support::raw(proxy.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(&format!("host: {backend}")), "{resp}");
    // A request that has one keeps its own.
    let resp = crate::support::raw(proxy.addr, b"GET / HTTP/1.0\r\nHost: mine\r\n\r\n").await;
    assert!(resp.contains("host: mine"), "{resp}");
    assert!(!resp.contains(&format!("host: {backend}")), "{resp}");
}

/// When every instance of the chosen group refuses the connection (they
/// died at once, before ejection has seen it), a warm group at weight 0
/// takes the request: nothing was sent, so nothing is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_instances_all_refuse_gives_way_to_a_warm_one() {
    let v1 = InProcess::start("v1", |_| {}).await;
    let dead: Vec<std::net::SocketAddr> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        })
        .collect();
    let proxy = Proxy::start(
        spec(vec![
            group(Role::Stable, "v1", 0, &[v1.addr]),
            group(Role::Canary, "v2", 100, &dead),
        ]),
        ProxyOptions::default(),
    );
    for _ in 0..5 {
        let resp = crate::support::raw(
            proxy.addr,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(
            resp.to_ascii_lowercase().contains("x-version: v1"),
            "{resp}"
        );
    }
}
