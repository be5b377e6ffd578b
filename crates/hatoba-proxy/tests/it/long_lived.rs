//! Long-lived responses through the proxy, with real clients and raw
//! backends: an event stream's request is one time-to-first-byte sample in
//! the latency histogram, its life goes to the long-lived counters;
//! WebSocket tunnels are counted open and end normal or abnormal; a stream
//! cut once its instance is out of the route (Hatoba's own stop) is
//! `stopped`, never a failure of the version. A tunnel passes each side's
//! close on as a half-close and reads the other side to its end, so a close
//! frame sent right before a close reaches the client, with no reset.

use crate::support::{Proxy, group, spec};
use hatoba_metrics::{GroupStats, LongLivedCounts, LongLivedEnd, Role};
use hatoba_proxy::ProxyOptions;
use hatoba_test_support::wait_for_async;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(10);

/// Reads up to the end of a head (`\r\n\r\n`), byte by byte.
async fn read_head(s: &mut (impl AsyncRead + Unpin)) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// What a raw backend does with the one connection it accepts once its head
/// is answered.
#[derive(Clone, Copy)]
enum Then {
    /// Sends `events` events `every` apart, then ends the stream.
    Stream { events: u32, every: Duration },
    /// Sends one event, then waits for a word on the channel and resets.
    StreamThenReset,
    /// Answers 101, echoes one message, then closes politely.
    EchoThenClose,
    /// Answers 101, echoes one message, then resets the connection.
    EchoThenReset,
}

/// A backend for one connection; `reset` (for `StreamThenReset`) tells it
/// when to reset.
async fn backend(then: Then) -> (SocketAddr, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reset, mut reset_now) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_head(&mut s).await;
        let reset = |s: TcpStream| {
            // SO_LINGER 0: the close sends a reset, not a FIN.
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
        };
        match then {
            Then::Stream { .. } | Then::StreamThenReset => {
                s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                      Transfer-Encoding: chunked\r\n\r\n",
                )
                .await
                .unwrap();
                let event = b"data: tick\n\n";
                let chunk = [format!("{:x}\r\n", event.len()).as_bytes(), event, b"\r\n"].concat();
                if let Then::Stream { events, every } = then {
                    for _ in 0..events {
                        s.write_all(&chunk).await.unwrap();
                        // Pacing, not waiting for anything: the stream must
                        // stay open for a while, as a real one does.
                        tokio::time::sleep(every).await;
                    }
                    s.write_all(b"0\r\n\r\n").await.unwrap();
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest).await;
                } else {
                    s.write_all(&chunk).await.unwrap();
                    let _ = reset_now.recv().await;
                    reset(s);
                }
            }
            Then::EchoThenClose | Then::EchoThenReset => {
                s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: upgrade\r\n\r\n",
                )
                .await
                .unwrap();
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await.unwrap();
                s.write_all(&buf[..n]).await.unwrap();
                if let Then::EchoThenReset = then {
                    reset(s);
                } else {
                    s.shutdown().await.unwrap();
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest).await;
                }
            }
        }
    });
    (addr, reset)
}

fn stats(proxy: &Proxy) -> Arc<GroupStats> {
    proxy.router.recorder().group("web", Role::Stable, "v1")
}

async fn wait_long_lived(g: &GroupStats, done: impl Fn(&LongLivedCounts) -> bool) {
    let waited = wait_for_async(DEADLINE, || std::future::ready(done(&g.long_lived()))).await;
    assert!(waited.is_ok(), "{:?}", g.long_lived());
}

async fn open_stream(proxy: &Proxy) -> TcpStream {
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    c
}

async fn open_tunnel(proxy: &Proxy) -> TcpStream {
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    c.write_all(b"hello").await.unwrap();
    let mut echo = [0u8; 5];
    c.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hello");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_is_one_time_to_first_byte_sample_and_a_long_lived_connection() {
    let every = Duration::from_millis(300);
    let (addr, _) = backend(Then::Stream { events: 4, every }).await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[addr])]),
        ProxyOptions::default(),
    );
    let g = stats(&proxy);
    let mut c = open_stream(&proxy).await;
    wait_long_lived(&g, |c| c.open == 1).await;
    assert_eq!(g.in_flight(), 1);
    let mut body = Vec::new();
    while !body.ends_with(b"0\r\n\r\n") {
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream ended early: {body:?}");
        body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        String::from_utf8_lossy(&body).matches("data: tick").count(),
        4
    );
    wait_long_lived(&g, |c| c.ended(LongLivedEnd::Normal) == 1).await;
    let ll = g.long_lived();
    assert_eq!((ll.opened, ll.open), (1, 0));
    assert!(ll.duration_sum_ms >= 900, "{ll:?}");
    let totals = g.totals();
    assert_eq!(totals.latency.count(), 1, "one sample: the head");
    assert_eq!(
        totals.latency.count_at_most(Duration::from_millis(250)),
        1,
        "the sample is the time to the head, not the stream's life"
    );
    assert_eq!(totals.upstream_failures, 0);
    let idle = wait_for_async(DEADLINE, || std::future::ready(g.in_flight() == 0)).await;
    assert!(idle.is_ok(), "the stream left the in-flight gauge");
    drop(c);
    // The admin listener's /metrics shows it apart from the requests.
    let admin = hatoba_proxy::AdminServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::clone(proxy.router.recorder()),
        vec![Arc::clone(&proxy.router)],
    )
    .unwrap();
    let metrics = crate::support::raw(
        admin.local_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let labels = r#"service="web",group="stable",version="v1""#;
    for line in [
        format!("hatoba_long_lived_opened_total{{{labels}}} 1"),
        format!("hatoba_long_lived_ended_total{{{labels},end=\"normal\"}} 1"),
        format!("hatoba_long_lived_ended_total{{{labels},end=\"abnormal\"}} 0"),
        format!("hatoba_long_lived_open{{{labels}}} 0"),
        format!("hatoba_long_lived_duration_seconds_count{{{labels}}} 1"),
        format!("http_request_duration_seconds_count{{{labels}}} 1"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    admin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_open_while_they_live_and_end_normal_or_abnormal() {
    let (polite, _) = backend(Then::EchoThenClose).await;
    let (rude, _) = backend(Then::EchoThenReset).await;
    for (addr, how) in [
        (polite, LongLivedEnd::Normal),
        (rude, LongLivedEnd::Abnormal),
    ] {
        let proxy = Proxy::start(
            spec(vec![group(Role::Stable, "v1", 100, &[addr])]),
            ProxyOptions::default(),
        );
        let g = stats(&proxy);
        let mut c = open_tunnel(&proxy).await;
        // The backend closes or resets after the echo; the client sees the
        // tunnel end either way.
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest).await;
        drop(c);
        wait_long_lived(&g, |c| c.ended(how) == 1).await;
        let ll = g.long_lived();
        assert_eq!((ll.opened, ll.open), (1, 0), "{how}: {ll:?}");
        assert_eq!(ll.ended.iter().sum::<u64>(), 1, "{how}: {ll:?}");
        assert_eq!(g.totals().latency.count(), 1, "{how}: the 101 only");
        let idle = wait_for_async(DEADLINE, || std::future::ready(g.in_flight() == 0)).await;
        assert!(idle.is_ok(), "{how}: the tunnel left the in-flight gauge");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tunnel_is_in_flight_and_holds_a_drain() {
    let (addr, _) = backend(Then::EchoThenClose).await;
    // Echo then close makes the backend half-close the tunnel; it stays
    // open until the client closes too (or the linger runs out, 2 s).
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[addr])]),
        ProxyOptions::default(),
    );
    let g = stats(&proxy);
    let b = proxy.router.backend(addr).unwrap();
    let c = open_tunnel(&proxy).await;
    wait_long_lived(&g, |c| c.open == 1).await;
    assert_eq!(g.in_flight(), 1);
    assert!(!proxy.router.drained(&b, Duration::from_millis(200)).await);
    drop(c);
    assert!(proxy.router.drained(&b, DEADLINE).await);
    wait_long_lived(&g, |c| c.ended(LongLivedEnd::Normal) == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cut_while_routed_are_abnormal_and_after_a_drain_stopped() {
    for drained in [false, true] {
        let (addr, reset) = backend(Then::StreamThenReset).await;
        let proxy = Proxy::start(
            spec(vec![group(Role::Stable, "v1", 100, &[addr])]),
            ProxyOptions::default(),
        );
        let g = stats(&proxy);
        let mut c = open_stream(&proxy).await;
        wait_long_lived(&g, |c| c.open == 1).await;
        if drained {
            // Hatoba takes the instance out of the route, then stops it at
            // the end of the drain.
            let other: SocketAddr = "127.0.0.1:9".parse().unwrap();
            proxy
                .router
                .update(spec(vec![group(Role::Stable, "v1", 100, &[other])]))
                .unwrap();
        }
        reset.send(()).await.unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest).await;
        let how = if drained {
            LongLivedEnd::Stopped
        } else {
            LongLivedEnd::Abnormal
        };
        wait_long_lived(&g, |c| c.ended(how) == 1).await;
        let ll = g.long_lived();
        assert_eq!(ll.ended.iter().sum::<u64>(), 1, "{how}: {ll:?}");
        let totals = g.totals();
        assert_eq!(totals.upstream_failures, 0, "the head was a 200");
        assert_eq!(totals.latency.count(), 1);
        assert_eq!(totals.against, 0, "nothing against the version");
    }
}

#[test]
fn version_totals_carry_long_lived_counts_and_read_old_replies() {
    use hatoba_proxy::control::VersionTotals;
    let rec = hatoba_metrics::Recorder::new();
    let stable = rec.group("web", Role::Stable, "v1");
    let canary = rec.group("web", Role::Canary, "v1");
    let _open = stable.open_long_lived();
    canary
        .open_long_lived()
        .end(LongLivedEnd::Abnormal, Duration::from_secs(3));
    stable
        .open_long_lived()
        .end(LongLivedEnd::Stopped, Duration::from_secs(3));
    let t = VersionTotals::of(&rec, "web", "v1").unwrap();
    assert_eq!((t.long_lived_open, t.long_lived_abnormal), (1, 1));
    // A data plane from before these fields: read as none.
    let old: VersionTotals =
        serde_json::from_str(r#"{"judged":3,"against":0,"latency_buckets":[[1,3]]}"#).unwrap();
    assert_eq!((old.long_lived_open, old.long_lived_abnormal), (0, 0));
}

/// A WebSocket close frame (status 1000), as a server sends it (unmasked).
const CLOSE_FRAME: [u8; 4] = [0x88, 0x02, 0x03, 0xe8];

/// A backend for `n` WebSockets, each closed as a server on its way out
/// closes them: a close frame, then the socket at once, with what the client
/// sent still unread, so the kernel answers with a reset right after the
/// frame.
async fn close_then_drop_backend(n: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..n {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                read_head(&mut s).await;
                s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: upgrade\r\n\r\n",
                )
                .await
                .unwrap();
                // Wait for the client's first message, left unread.
                let mut peeked = [0u8; 1];
                let _ = s.peek(&mut peeked).await;
                let _ = s.write_all(&CLOSE_FRAME).await;
                drop(s);
            });
        }
    });
    addr
}

/// How a WebSocket client's connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// It read the close frame, answered it and read to the end.
    Clean,
    /// Its connection ended without the close frame.
    NoCloseFrame,
    /// A read or write failed (a reset): a WebSocket library reports an
    /// abnormal closure (1006), whatever was left unread.
    Reset,
}

/// One WebSocket client through the proxy that writes messages until it
/// reads the server's close frame, then answers it and reads to the end.
async fn websocket_close_seen_by_client(proxy: SocketAddr) -> Ended {
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (mut r, mut w) = c.into_split();
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let closed = Arc::clone(&closed);
        async move {
            // A masked text frame "ping" (mask 0): messages in flight when
            // the server closes. Bounded: 2,000 at most.
            let message = [0x81, 0x84, 0, 0, 0, 0, b'p', b'i', b'n', b'g'];
            for _ in 0..2_000 {
                if closed.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                if w.write_all(&message).await.is_err() {
                    return (w, false);
                }
                tokio::task::yield_now().await;
            }
            (w, true)
        }
    });
    let mut read = Vec::new();
    let got = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 64];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => return Ended::NoCloseFrame,
                Err(_) => return Ended::Reset,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
            if read.ends_with(&CLOSE_FRAME) {
                return Ended::Clean;
            }
        }
    })
    .await
    .unwrap_or(Ended::NoCloseFrame);
    closed.store(true, std::sync::atomic::Ordering::Release);
    let (mut w, wrote) = writer.await.unwrap();
    if !wrote {
        return Ended::Reset;
    }
    if got != Ended::Clean {
        return got;
    }
    answer_close(&mut w, &mut r).await
}

/// A client's answer to the server's close frame (masked, status 1000),
/// then the end of the tunnel: clean (EOF) or reset.
async fn answer_close(
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    r: &mut (impl AsyncRead + Unpin),
) -> Ended {
    if w.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
        .await
        .is_err()
    {
        return Ended::Reset;
    }
    let mut rest = Vec::new();
    match tokio::time::timeout(DEADLINE, r.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => Ended::Clean,
        Ok(Err(_)) => Ended::Reset,
        Err(_) => panic!("the tunnel never ended"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_frame_sent_right_before_the_backend_closes_reaches_every_client() {
    const RUNS: usize = 200;
    let addr = close_then_drop_backend(RUNS).await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[addr])]),
        ProxyOptions::default(),
    );
    let g = stats(&proxy);
    let mut ends = std::collections::BTreeMap::new();
    for _ in 0..RUNS {
        let end = websocket_close_seen_by_client(proxy.addr).await;
        *ends.entry(format!("{end:?}")).or_insert(0) += 1;
    }
    assert_eq!(
        ends.get("Clean").copied().unwrap_or(0),
        RUNS,
        "how {RUNS} WebSockets ended: {ends:?}"
    );
    wait_long_lived(&g, |c| c.ended.iter().sum::<u64>() == RUNS as u64).await;
    let idle = wait_for_async(DEADLINE, || std::future::ready(g.in_flight() == 0)).await;
    assert!(idle.is_ok(), "every tunnel left the in-flight gauge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_whose_backend_closed_ends_within_the_linger_if_the_client_stays() {
    let (addr, _) = backend(Then::EchoThenClose).await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[addr])]),
        ProxyOptions::default(),
    );
    let g = stats(&proxy);
    let b = proxy.router.backend(addr).unwrap();
    // The backend half-closes after the echo; the client keeps its side
    // open and reads nothing more.
    let c = open_tunnel(&proxy).await;
    wait_long_lived(&g, |c| c.open == 1).await;
    let started = tokio::time::Instant::now();
    assert!(proxy.router.drained(&b, DEADLINE).await);
    let took = started.elapsed();
    assert!(
        took <= Duration::from_secs(4),
        "the tunnel outlived its 2s linger: {took:?}"
    );
    wait_long_lived(&g, |c| c.ended(LongLivedEnd::Normal) == 1).await;
    drop(c);
}

/// A WebSocket client of the demo app through the proxy: writes messages
/// until the server's close frame comes, answers it, reads to the end.
async fn demo_websocket_client(mut c: TcpStream) -> Ended {
    let mut r = Vec::new();
    let closed = loop {
        // A masked text frame "hi" (mask 0), then whatever came back.
        if c.write_all(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i'])
            .await
            .is_err()
        {
            return Ended::Reset;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(20), c.read(&mut buf)).await {
            // Pacing: nothing came in 20 ms, write again.
            Err(_) => continue,
            Ok(Ok(0)) => return Ended::NoCloseFrame,
            Ok(Err(_)) => return Ended::Reset,
            Ok(Ok(n)) => r.extend_from_slice(&buf[..n]),
        }
        // Server frames here are short: 2-byte heads.
        let mut at = 0;
        let mut close = false;
        while at + 2 <= r.len() {
            let len = usize::from(r[at + 1] & 0x7f);
            if at + 2 + len > r.len() {
                break;
            }
            close |= r[at] & 0x0f == 0x8 && r[at + 2..at + 2 + len] == [0x03, 0xe9];
            at += 2 + len;
        }
        r.drain(..at);
        if close {
            break true;
        }
    };
    assert!(closed);
    let (mut r, mut w) = c.split();
    answer_close(&mut w, &mut r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_of_an_instance_that_stops_get_its_close_frame_and_a_clean_end() {
    // The end of a drain: the instance gets SIGTERM and closes its
    // WebSockets (the demo app: close frame 1001, closing handshake) while
    // its clients are still talking.
    const SOCKETS: usize = 20;
    let app = crate::support::InProcess::start("v1", |c| c.tick = Duration::from_millis(5)).await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[app.addr])]),
        ProxyOptions::default(),
    );
    let g = stats(&proxy);
    let mut clients = Vec::new();
    for _ in 0..SOCKETS {
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        let head = read_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        clients.push(tokio::spawn(demo_websocket_client(c)));
    }
    wait_long_lived(&g, |c| c.open == SOCKETS as u64).await;
    app.stop().await;
    let mut ends = std::collections::BTreeMap::new();
    for c in clients {
        *ends.entry(format!("{:?}", c.await.unwrap())).or_insert(0) += 1;
    }
    assert_eq!(
        ends.get("Clean").copied().unwrap_or(0),
        SOCKETS,
        "how {SOCKETS} WebSockets ended: {ends:?}"
    );
    wait_long_lived(&g, |c| c.ended(LongLivedEnd::Normal) == SOCKETS as u64).await;
}
