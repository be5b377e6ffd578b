//! Hostile and broken input: each gets the right answer, nobody else is
//! disturbed, nothing panics.

use crate::support::{InProcess, Load, Proxy, group, raw, read_until_closed, spec};
use hatoba_metrics::Role;
use hatoba_proxy::ProxyOptions;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_is_a_503_with_a_json_body() {
    let proxy = Proxy::start(spec(vec![]), ProxyOptions::default());
    let resp = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(
        resp.contains("application/json") && resp.contains("\"error\":\"no_backend\""),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backends_are_a_502() {
    let dead = hatoba_test_support::free_port().unwrap();
    let proxy = Proxy::start(
        spec(vec![group(
            Role::Stable,
            "v1",
            100,
            &[format!("127.0.0.1:{dead}").parse().unwrap()],
        )]),
        ProxyOptions::default(),
    );
    let resp = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(
        resp.contains("\"error\":\"upstream_unreachable\""),
        "{resp}"
    );
}

/// A backend that answers garbage, one that hangs: 502 and 504, and a good
/// backend beside them keeps serving a concurrent load without failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_and_hanging_backends_get_502_and_504_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = garbage.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"THIS IS NOT HTTP\r\n\r\n").await;
            });
        }
    });
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_addr = hanging.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hanging.accept().await {
            held.push(s);
        }
    });
    let good = InProcess::start("v1", |_| {}).await;
    let opts = ProxyOptions {
        response_timeout: Duration::from_millis(500),
        ..ProxyOptions::default()
    };
    let bad_proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[garbage_addr])]),
        opts.clone(),
    );
    let slow_proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[hanging_addr])]),
        opts.clone(),
    );
    let good_proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[good.addr])]),
        opts,
    );
    let load = Load::start(good_proxy.addr, 8);
    let resp = raw(
        bad_proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    let resp = raw(
        slow_proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 504"), "{resp}");
    assert!(resp.contains("\"error\":\"upstream_timeout\""), "{resp}");
    load.pass(1_000).await;
    let tally = load.finish().await;
    assert!(tally.failed.is_empty(), "{:?}", tally.failed);
    good.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_are_refused() {
    let s = InProcess::start("v1", |_| {}).await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[s.addr])]),
        ProxyOptions::default(),
    );
    let resp = raw(proxy.addr, b"NOT A REQUEST\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp:?}");
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100 * 1024));
    big.extend(b"\r\n\r\n");
    let resp = raw(proxy.addr, &big).await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{:?}",
        &resp[..resp.len().min(100)]
    );
    // The proxy still serves after all that.
    let resp = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    s.stop().await;
}

/// Request smuggling shapes get one 400 and a closed connection, whichever
/// side parses them (the plain loop, or hyper after an `Expect`): a body
/// framed both by length and by chunks, and an HTTP/1.1 request without
/// exactly one Host. What was sent behind them is never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_get_a_400_and_nothing_behind_them_is_served() {
    let s = InProcess::start("v1", |_| {}).await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[s.addr])]),
        ProxyOptions::default(),
    );
    let behind = "GET /behind HTTP/1.1\r\nHost: x\r\n\r\n";
    for (request, why) in [
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Content-Length and Transfer-Encoding",
        ),
        ("GET / HTTP/1.1\r\n\r\n", "exactly one Host"),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "exactly one Host",
        ),
        (
            "PUT / HTTP/1.1\r\nHost: a\r\nHost: b\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            "exactly one Host",
        ),
    ] {
        let resp = raw(proxy.addr, format!("{request}{behind}").as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{request:?}: {resp}");
        assert!(resp.contains(why), "{request:?}: {resp}");
        let answers = resp.lines().filter(|l| l.starts_with("HTTP/1.1 ")).count();
        assert_eq!(answers, 1, "{request:?}: {resp}");
    }
    // HTTP/1.0 needs no Host, and the proxy still serves.
    let resp = raw(proxy.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_disconnects_mid_body_disturbs_no_one() {
    use tokio::io::AsyncWriteExt;
    let s = InProcess::start("v1", |_| {}).await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[s.addr])]),
        ProxyOptions::default(),
    );
    let load = Load::start(proxy.addr, 8);
    for _ in 0..20 {
        let mut c = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nonly a little")
            .await
            .unwrap();
        drop(c);
    }
    load.pass(1_000).await;
    let tally = load.finish().await;
    assert!(tally.failed.is_empty(), "{:?}", tally.failed);
    s.stop().await;
}

/// A client that sends its headers a byte at a time is cut off after the
/// header timeout; a load beside it is served without a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_is_cut_off_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = InProcess::start("v1", |_| {}).await;
    let opts_timeout = Duration::from_secs(1);
    let opts = ProxyOptions {
        header_read_timeout: opts_timeout,
        ..ProxyOptions::default()
    };
    let proxy = Proxy::start(spec(vec![group(Role::Stable, "v1", 100, &[s.addr])]), opts);
    let load = Load::start(proxy.addr, 8);
    let started = tokio::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut closed = false;
    for b in
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
    {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await
        {
            // EOF or an error answer: the proxy gave up on this client.
            let _ = n;
            closed = true;
            break;
        }
    }
    // Cut off before it could send its whole head (which takes it over
    // 4 s), and by the header timer: not before it ran out.
    assert!(closed, "the slow client was never cut off");
    let took = started.elapsed();
    assert!(
        took >= opts_timeout,
        "cut off after {took:?}, before the header timeout"
    );
    load.pass(1_000).await;
    let tally = load.finish().await;
    assert!(tally.failed.is_empty(), "{:?}", tally.failed);
    s.stop().await;
}

/// A client that sends part of a small body and then nothing: a 408 after
/// the header read timeout, and the backend never sees the request. One
/// that sends slowly but steadily is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_that_stops_arriving_is_a_408() {
    use tokio::io::AsyncWriteExt;
    let s = InProcess::start("v1", |_| {}).await;
    let opts = ProxyOptions {
        header_read_timeout: Duration::from_secs(1),
        ..ProxyOptions::default()
    };
    let proxy = Proxy::start(spec(vec![group(Role::Stable, "v1", 100, &[s.addr])]), opts);
    let out = raw(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten..",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    assert!(out.contains("\"error\":\"client_timeout\""), "{out}");

    // A slow client that keeps sending is not cut: the timeout bounds each
    // wait for more, not the whole body (six pieces, 1.5 s in all).
    let mut c = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 6\r\n\r\n")
        .await
        .unwrap();
    let mut pace = tokio::time::interval(Duration::from_millis(300));
    for piece in b"abcdef" {
        pace.tick().await;
        c.write_all(&[*piece]).await.unwrap();
    }
    let out = read_until_closed(&mut c).await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    s.stop().await;
}
