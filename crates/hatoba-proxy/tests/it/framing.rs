//! HTTP/1 framing on both sides. Upstream: what a backend may legally
//! answer (chunked with trailers, close-delimited HTTP/1.0, interim 100s,
//! HEAD and 204 with a length, `Connection: close`) reaches the client whole,
//! and request bodies of every framing reach the backend whole; what is
//! replayed after a backend fails (an idempotent request with a small
//! body) and what never is (a POST that reached a backend). Client side:
//! pipelined requests, HTTP/1.0 keep-alive, answers of unknown length to
//! HTTP/1.0 clients, a connection handed to hyper midway, idle connections
//! closed when the listener stops, and a client that stops reading cut.

use crate::support::{Proxy, group, read_until_closed, spec};
use bytes::Bytes;
use hatoba_metrics::Role;
use hatoba_proxy::ProxyOptions;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// A backend written by hand: reads request heads (requests here have no
/// body) and answers each by its path with bytes exactly as scripted. Each
/// connection it closes itself is reported on the receiver, once closed.
async fn scripted_backend() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let Some(request_line) = read_request_head(&mut stream).await else {
                        return;
                    };
                    let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
                    let (answer, close): (&[u8], bool) = match path.as_str() {
                        "/chunked" => (
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
                            false,
                        ),
                        "/http10" => (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", true),
                        "/continue" => (
                            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                            false,
                        ),
                        "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", false),
                        "/nocontent" => (b"HTTP/1.1 204 No Content\r\n\r\n", false),
                        "/close" => (
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbye!\n",
                            true,
                        ),
                        // Keep-alive by its headers, then closed at once:
                        // the proxy's pooled connection goes stale.
                        "/stale" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale", true),
                        "/cut" => (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", true),
                        _ => (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false),
                    };
                    if stream.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                    if close {
                        drop(stream);
                        let _ = closed_tx.send(());
                        return;
                    }
                }
            });
        }
    });
    (addr, closed)
}

/// Reads a request head line by line; its request line, or `None` when
/// the connection ends first.
async fn read_request_head(stream: &mut BufReader<tokio::net::TcpStream>) -> Option<String> {
    let mut request_line = String::new();
    if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
        return None;
    }
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(request_line);
        }
    }
}

async fn client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn request(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
) -> (u16, Result<Bytes, String>) {
    send.ready().await.unwrap();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "framing.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string());
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_framing_reaches_the_client_whole() {
    let (backend, _closed) = scripted_backend().await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[backend])]),
        ProxyOptions::default(),
    );
    let mut c = client(proxy.addr).await;
    // Each twice on one client connection: the upstream connection is reused
    // where the backend allows it and replaced where it does not.
    for _ in 0..2 {
        for (method, path, status, body) in [
            ("GET", "/chunked", 200, &b"hello world"[..]),
            ("GET", "/http10", 200, b"until the end"),
            ("GET", "/continue", 200, b"ok"),
            ("HEAD", "/head", 200, b""),
            ("GET", "/nocontent", 204, b""),
            ("GET", "/close", 200, b"bye!\n"),
            ("GET", "/missing", 404, b""),
        ] {
            let (got, got_body) = request(&mut c, method, path).await;
            assert_eq!(got, status, "{method} {path}");
            assert_eq!(got_body.as_deref(), Ok(body), "{method} {path}");
        }
    }
    // A body the backend cuts short: the client's answer is cut too (never
    // passed off as whole: no answer at all, or fewer bytes than announced),
    // and the next request is served.
    let out = crate::support::raw(proxy.addr, b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n").await;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) => {
            assert!(head.contains("content-length: 100"), "{out}");
            assert!(body.len() < 100, "{out}");
        }
        // Not even a whole head: then nothing at all.
        None => assert!(out.is_empty(), "a head cut short: {out:?}"),
    }
    let (status, body) = request(&mut c, "GET", "/chunked").await;
    assert_eq!((status, body.as_deref()), (200, Ok(&b"hello world"[..])));
}

/// A backend that closes every connection after answering, though its
/// answers say keep-alive (as one does when its keep-alive timeout ends):
/// each pooled connection is closed by the next request. Neither GETs nor
/// POSTs may fail for it. (A close that crosses the next request on the
/// wire is the race every proxy has: GETs are replayed, a POST gets a 502.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_backend_closed_cost_nothing() {
    let (backend, mut closed) = scripted_backend().await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[backend])]),
        ProxyOptions::default(),
    );
    let mut c = client(proxy.addr).await;
    for i in 0..40 {
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let (status, body) = request(&mut c, method, "/stale").await;
        assert_eq!(
            (status, body.as_deref()),
            (200, Ok(&b"stale"[..])),
            "request {i} ({method})"
        );
        tokio::time::timeout(std::time::Duration::from_secs(10), closed.recv())
            .await
            .expect("the backend closes its connection after answering");
    }
}

/// A backend that answers with the length and a checksum of the body it got.
async fn body_echo_backend() -> SocketAddr {
    body_echo_backend_counted().await.0
}

/// [`body_echo_backend`], with the number of connections it accepted.
async fn body_echo_backend_counted() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let framing = if req.headers().contains_key("transfer-encoding") {
                            "chunked"
                        } else {
                            "length"
                        };
                        let body = req.into_body().collect().await?.to_bytes();
                        let answer = format!("{framing} {} {}", body.len(), checksum(&body));
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(answer))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_of_every_framing_reach_the_backend_whole() {
    let backend = body_echo_backend().await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[backend])]),
        ProxyOptions::default(),
    );
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sum = checksum(&payload);

    // With a length.
    let mut c = client(proxy.addr).await;
    c.ready().await.unwrap();
    let req = hyper::Request::post("/upload")
        .header("host", "framing.test")
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, format!("length {} {sum}", payload.len()));

    // Chunked, in pieces of unknown total length.
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let pieces = payload
        .chunks(100_003)
        .map(Bytes::copy_from_slice)
        .collect();
    let req = hyper::Request::post("/upload")
        .header("host", "framing.test")
        .body(Pieces(pieces))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, format!("chunked {} {sum}", payload.len()));
    // A small chunked body is read whole and goes on with a length.
    send.ready().await.unwrap();
    let small = [&b"he"[..], b"llo"]
        .map(Bytes::from_static)
        .into_iter()
        .collect();
    let req = hyper::Request::post("/upload")
        .header("host", "framing.test")
        .body(Pieces(small))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, format!("length 5 {}", checksum(b"hello")));

    // Written by hand, with `Expect: 100-continue`: the proxy answers the
    // 100 itself and the body still arrives whole.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"PUT /upload HTTP/1.1\r\nHost: framing.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.ends_with(&format!("length 5 {}", checksum(b"hello"))),
        "{out}"
    );
}

/// A body of pieces with no announced length: sent chunked.
struct Pieces(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// A backend that answers `answer` as soon as it has read a request head,
/// then reads and sends nothing more, holding the connection open.
async fn holding_backend(answer: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                if read_request_head(&mut stream).await.is_none() {
                    return;
                }
                let _ = stream.get_mut().write_all(answer).await;
                let _held = stream;
                std::future::pending::<()>().await;
            });
        }
    });
    backend
}

/// A backend that refuses an upload as soon as it has read the head, and
/// then reads nothing more: the client gets its 413 (not a 504 after the
/// proxy's write blocked forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_to_an_upload_reaches_the_client() {
    let backend =
        holding_backend(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
            .await;
    let opts = ProxyOptions {
        response_timeout: std::time::Duration::from_secs(20),
        ..ProxyOptions::default()
    };
    let proxy = Proxy::start(spec(vec![group(Role::Stable, "v1", 100, &[backend])]), opts);
    let s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr
            .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 64000000\r\n\r\n")
            .await;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..1000 {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let answer = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while !String::from_utf8_lossy(&got).contains("too large") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    })
    .await
    .expect("an answer within the minute");
    writer.abort();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.ends_with("too large"), "{answer}");
}

/// A chunked body decoded, if it is one whole (and nothing follows it).
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            return (rest == "\r\n").then_some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// The status codes of the answers in `out`, in order.
fn statuses(out: &str) -> Vec<&str> {
    out.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| out.get(at + 9..at + 12))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_each_framed() {
    let (backend, _closed) = scripted_backend().await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[backend])]),
        ProxyOptions::default(),
    );
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // Four requests in one write; the last asks to close.
    s.write_all(
        b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n\
HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n\
GET /nocontent HTTP/1.1\r\nHost: x\r\n\r\n\
GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let out = read_until_closed(&mut s).await;
    assert_eq!(statuses(&out), ["200", "200", "204", "404"], "{out}");
    let answers: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
    // A body of unknown length goes to an HTTP/1.1 client chunked, whole.
    assert!(
        answers[0].contains("transfer-encoding: chunked\r\n"),
        "{out}"
    );
    let (_, chunked) = answers[0].split_once("\r\n\r\n").unwrap();
    assert_eq!(dechunk(chunked).as_deref(), Some("hello world"), "{out}");
    // HEAD keeps the backend's length (as it spelled it) and has no body.
    assert!(answers[1].contains("Content-Length: 10\r\n"), "{out}");
    assert!(answers[1].ends_with("\r\n\r\n"), "{out}");
    assert!(answers[2].ends_with("\r\n\r\n"), "{out}");
    // The last is answered, says it closes, and does.
    assert!(answers[3].contains("connection: close\r\n"), "{out}");
    for answer in &answers {
        assert!(answer.contains("date: "), "every answer is dated: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_get_keep_alive_when_asked_and_close_delimited_bodies() {
    let (backend, _closed) = scripted_backend().await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[backend])]),
        ProxyOptions::default(),
    );
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // Keep-alive asked for, and a body of known length: the connection stays.
    s.write_all(b"GET /close HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut reader = BufReader::new(&mut s);
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).await.unwrap() > 0, "{head:?}");
        head.push(line.to_ascii_lowercase());
        if head.last().is_some_and(|l| l == "\r\n") {
            break;
        }
    }
    assert!(
        head.contains(&"connection: keep-alive\r\n".to_owned()),
        "{head:?}"
    );
    assert!(
        head.contains(&"content-length: 5\r\n".to_owned()),
        "{head:?}"
    );
    let mut body = [0u8; 5];
    reader.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"bye!\n");
    // A body of unknown length can only be ended by closing the connection.
    s.write_all(b"GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let out = read_until_closed(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(!out.contains("transfer-encoding"), "{out}");
    assert!(out.contains("connection: close\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nhello world"), "{out}");
    // Without keep-alive, HTTP/1.0 closes after the answer.
    let out = crate::support::raw(proxy.addr, b"GET /missing HTTP/1.0\r\n\r\n").await;
    assert_eq!(statuses(&out), ["404"], "{out}");
    assert!(out.contains("connection: close\r\n"), "{out}");
}

/// A request the proxy's own HTTP/1 path leaves to hyper (here `Expect:
/// 100-continue`), after requests it served itself on the same connection:
/// hyper gets the connection with the bytes already read and serves the
/// rest of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_handed_to_hyper_midway_keeps_being_served() {
    let backend = body_echo_backend().await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[backend])]),
        ProxyOptions::default(),
    );
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // Pipelined: one the proxy serves, then one for hyper whose head
    // arrives in the same read.
    s.write_all(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
PUT /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    tokio::time::timeout(std::time::Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        while !got.windows(interim.len()).any(|w| w == interim) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("hyper asks for the body");
    s.write_all(b"hello").await.unwrap();
    s.write_all(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let rest = read_until_closed(&mut s).await;
    let out = format!("{}{rest}", String::from_utf8_lossy(&got));
    assert_eq!(statuses(&out), ["200", "100", "200", "200"], "{out}");
    assert!(
        out.contains(&format!("length 3 {}", checksum(b"abc"))),
        "{out}"
    );
    assert!(
        out.contains(&format!("length 5 {}", checksum(b"hello"))),
        "{out}"
    );
    assert!(
        out.ends_with(&format!("length 0 {}", checksum(b""))),
        "{out}"
    );
}

/// Stopping the listener closes idle keep-alive connections at once, and
/// lets a request in progress finish with `Connection: close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_closes_idle_connections_and_finishes_busy_ones() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (release, released) = tokio::sync::watch::channel(false);
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (mut released, arrived_tx) = (released.clone(), arrived_tx.clone());
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                while let Some(line) = read_request_head(&mut stream).await {
                    if line.contains("/slow") {
                        let _ = arrived_tx.send(());
                        let _ = released.wait_for(|r| *r).await;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if stream.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    // One thread: once the idle connection is closed, the thread that
    // serves the busy one has seen the stop too.
    let proxy = Proxy::with_threads(
        spec(vec![group(Role::Stable, "v1", 100, &[backend])]),
        ProxyOptions::default(),
        1,
    );
    let addr = proxy.addr;
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let n = idle.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).ends_with("\r\n\r\nok"));
    let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(15), arrived.recv())
        .await
        .expect("the slow request reaches the backend");
    let stopping = std::thread::spawn(move || drop(proxy));
    // The idle connection is closed without waiting for the busy one.
    let idle_out = read_until_closed(&mut idle).await;
    assert_eq!(idle_out, "", "an idle connection gets nothing, just closed");
    release.send(true).unwrap();
    let busy_out = read_until_closed(&mut busy).await;
    assert!(busy_out.starts_with("HTTP/1.1 200 OK\r\n"), "{busy_out}");
    assert!(busy_out.contains("connection: close\r\n"), "{busy_out}");
    assert!(busy_out.ends_with("\r\n\r\nok"), "{busy_out}");
    stopping.join().unwrap();
}

/// A backend that sends the head and a first piece of its body, then
/// nothing more while holding the connection open: after the response
/// timeout without a byte, the client's connection is cut, its body short of
/// the announced length (never passed off as whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_cut_after_the_response_timeout() {
    let backend = holding_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst").await;
    let opts = ProxyOptions {
        response_timeout: std::time::Duration::from_secs(1),
        ..ProxyOptions::default()
    };
    let proxy = Proxy::start(spec(vec![group(Role::Stable, "v1", 100, &[backend])]), opts);
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let out = read_until_closed(&mut s).await;
    let (head, body) = out.split_once("\r\n\r\n").expect("the head was relayed");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(head.contains("content-length: 100"), "{out}");
    assert_eq!(body, "first", "what came is relayed, then the cut");
}

/// A client that asks for a large answer and then reads none of it: once
/// the socket buffers are full and it has taken nothing for the send
/// timeout, the proxy closes its connection and lets go of the upstream one
/// (which the backend sees as its writes failing), instead of holding both
/// forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_after_the_send_timeout() {
    stops_reading_and_is_cut(b"GET /large HTTP/1.1\r\nHost: x\r\n\r\n").await;
}

/// The same on a connection hyper serves (a request with `Expect` is handed
/// to it; so are upgrades, h2c and TLS): hyper has no send timeout of its
/// own, so the proxy bounds its writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_on_connections_hyper_serves() {
    stops_reading_and_is_cut(b"GET /large HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n")
        .await;
}

async fn stops_reading_and_is_cut(request: &[u8]) {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 4096; // 256 MiB: far more than socket buffers hold
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let mut stream = BufReader::new(stream);
        read_request_head(&mut stream).await.expect("a request");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            CHUNK * CHUNKS
        );
        let chunk = vec![b'x'; CHUNK];
        let mut sent = stream.get_mut().write_all(head.as_bytes()).await.is_ok();
        for _ in 0..CHUNKS {
            sent = sent && stream.get_mut().write_all(&chunk).await.is_ok();
        }
        // Whether the proxy let go of the connection before the end.
        let _ = gone_tx.send(!sent);
    });
    let opts = ProxyOptions {
        send_timeout: std::time::Duration::from_secs(1),
        ..ProxyOptions::default()
    };
    let proxy = Proxy::start(spec(vec![group(Role::Stable, "v1", 100, &[backend])]), opts);
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let cut = tokio::time::timeout(std::time::Duration::from_secs(30), gone.recv())
        .await
        .expect("the proxy lets go of the upstream connection");
    assert_eq!(
        cut,
        Some(true),
        "the backend's writes failed before its end"
    );
    // What the client finds is the start of the answer, then the end of the
    // connection, well short of the announced length.
    let mut got = 0usize;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(15), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("the client's connection stays open after the cut"),
        }
    }
    assert!(
        got > 0 && got < CHUNK * CHUNKS,
        "{got} bytes reached the client"
    );
}

/// The demo app answers `/` without reading a request's body, as many
/// handlers do; hyper's server then closes the connection after its answer
/// unless the body had already arrived. A small body goes upstream in the
/// same write as its head, so the connection stays usable and no POST meets
/// a closed pooled connection (which, not being idempotent, it could not be
/// retried past). Clients here send the body apart from the head, on new
/// connections, from several tasks at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn posts_to_a_backend_that_answers_before_reading_the_body_all_succeed() {
    let a = crate::support::InProcess::start("v1", |_| {}).await;
    let b = crate::support::InProcess::start("v1", |_| {}).await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[a.addr, b.addr])]),
        ProxyOptions::default(),
    );
    let addr = proxy.addr;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for i in 0..150 {
                    // With a length and chunked, in turn.
                    let (head, body): (&[u8], &[u8]) = if i % 2 == 0 {
                        (b"Content-Length: 5\r\n\r\n", b"hello")
                    } else {
                        (
                            b"Transfer-Encoding: chunked\r\n\r\n",
                            b"5\r\nhello\r\n0\r\n\r\n",
                        )
                    };
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n")
                        .await
                        .unwrap();
                    s.write_all(head).await.unwrap();
                    tokio::task::yield_now().await;
                    s.write_all(body).await.unwrap();
                    let out = read_until_closed(&mut s).await;
                    if !out.starts_with("HTTP/1.1 200 ") {
                        failed.push(format!("task {t} request {i}: {out}"));
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = Vec::new();
    for t in tasks {
        failed.extend(t.await.unwrap());
    }
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    a.stop().await;
    b.stop().await;
}

/// A backend that reads a request whole and closes the connection without
/// answering (as one that crashed would): an idempotent request with a small
/// body is sent again, whole, to the other backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_with_a_small_body_is_replayed_whole() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dropping = listener.local_addr().unwrap();
    let (dropped_tx, mut dropped) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let dropped_tx = dropped_tx.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut body = [0u8; 5];
                if read_request_head(&mut stream).await.is_some()
                    && stream.read_exact(&mut body).await.is_ok()
                {
                    let _ = dropped_tx.send(());
                }
            });
        }
    });
    let echo = body_echo_backend().await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[dropping, echo])]),
        ProxyOptions::default(),
    );
    let mut c = client(proxy.addr).await;
    let want = format!("length 5 {}", checksum(b"hello"));
    // Until the dropping backend has had (and dropped) a request: each pick
    // between the two is random.
    for i in 0..200 {
        c.ready().await.unwrap();
        let req = hyper::Request::put("/doc")
            .header("host", "framing.test")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let resp = c.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            (status, String::from_utf8_lossy(&body).into_owned()),
            (200, want.clone()),
            "request {i}"
        );
        if dropped.try_recv().is_ok() {
            return;
        }
    }
    panic!("the dropping backend never got a request");
}

/// After a body too long to hold (streamed), the upstream connection is not
/// used again: the backend may have answered before reading all of it and
/// close the connection after its answer, and the next request there,
/// perhaps a POST that can not be replayed, would meet the close. After a
/// small body the connection is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_that_carried_a_long_body_is_not_reused() {
    let (backend, accepted) = body_echo_backend_counted().await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[backend])]),
        ProxyOptions::default(),
    );
    let mut c = client(proxy.addr).await;
    let mut post = async |body: Vec<u8>| {
        c.ready().await.unwrap();
        let want = format!("length {} {}", body.len(), checksum(&body));
        let req = hyper::Request::post("/upload")
            .header("host", "framing.test")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = c.send_request(req).await.unwrap();
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, want);
    };
    for _ in 0..3 {
        post(vec![b'x'; 10]).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "small bodies share one connection"
    );
    for _ in 0..3 {
        post(vec![b'y'; 200_000]).await;
    }
    // The first long body goes on the pooled connection, which is then let
    // go; each of the next two needs a new one.
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "no reuse after a long body"
    );
}

/// A backend that reads each request whole (its head, then a body framed by
/// its length) and resets the connection without answering, as one that
/// crashed while acting on it would; except `GET /warm`, answered 200 on a
/// kept-alive connection so the proxy pools it. Every request line it
/// receives is pushed to `seen` as soon as its head has arrived.
async fn resetting_backend(seen: Arc<std::sync::Mutex<Vec<String>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(request_line.trim_end().to_owned());
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if request_line.starts_with("GET /warm ") {
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.get_mut().write_all(ok).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    // SO_LINGER 0: the close sends a reset, not a FIN.
                    let _ = socket2::SockRef::from(stream.get_ref())
                        .set_linger(Some(std::time::Duration::ZERO));
                    return;
                }
            });
        }
    });
    addr
}

/// Sends a POST with a body of `size` bytes through a proxy to two
/// [`resetting_backend`]s whose connections it pooled first (so a replay
/// could take the stale-connection path as well as the next-backend one):
/// the answer's status and body, and every POST line the backends got.
async fn post_to_resetting_backends(size: usize) -> (u16, String, Vec<String>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let a = resetting_backend(Arc::clone(&seen)).await;
    let b = resetting_backend(Arc::clone(&seen)).await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[a, b])]),
        ProxyOptions::default(),
    );
    let mut c = client(proxy.addr).await;
    for _ in 0..8 {
        let (status, body) = request(&mut c, "GET", "/warm").await;
        assert_eq!((status, body.as_deref()), (200, Ok(&b"ok"[..])));
    }
    c.ready().await.unwrap();
    let req = hyper::Request::post("/orders")
        .header("host", "framing.test")
        .body(Full::new(Bytes::from(vec![b'o'; size])))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let posts = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("POST "))
        .cloned()
        .collect();
    (status, String::from_utf8_lossy(&body).into_owned(), posts)
}

/// A POST is not idempotent: once a backend has had it, the proxy never
/// sends it again, neither to another backend nor on a fresh connection
/// after a pooled one failed; the client gets a 502 and decides. Both
/// backends read the POST whole and reset, so a replay would reach one of
/// them a second time. Here with a small body: the path that reads it
/// whole first, so that idempotent requests can be replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_reached_a_backend_is_never_replayed() {
    let (status, body, posts) = post_to_resetting_backends(5).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_reset"), "{body}");
    assert_eq!(posts, ["POST /orders HTTP/1.1"], "sent more than once");
}

/// [`a_post_that_reached_a_backend_is_never_replayed`] with a body past
/// the 64 KiB retry buffer, which is streamed to the backend instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_post_that_reached_a_backend_is_never_replayed() {
    let (status, body, posts) = post_to_resetting_backends(200_000).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_reset"), "{body}");
    assert_eq!(posts, ["POST /orders HTTP/1.1"], "sent more than once");
}
