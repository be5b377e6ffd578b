//! HTTP/1 framing on the upstream side: what a backend may legally answer
//! (chunked with trailers, close-delimited HTTP/1.0, interim 100s, HEAD and
//! 204 with a length, `Connection: close`) reaches the client whole, and
//! request bodies of every framing reach the backend whole.

use crate::support::{Proxy, group, spec};
use bytes::Bytes;
use hatoba_metrics::Role;
use hatoba_proxy::ProxyOptions;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
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
    if let Some((head, body)) = out.split_once("\r\n\r\n") {
        assert!(head.contains("content-length: 100"), "{out}");
        assert!(body.len() < 100, "{out}");
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
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
    addr
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

/// A backend that refuses an upload as soon as it has read the head, and
/// then reads nothing more: the client gets its 413 (not a 504 after the
/// proxy's write blocked forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_to_an_upload_reaches_the_client() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                if read_request_head(&mut stream).await.is_none() {
                    return;
                }
                let _ = stream
                    .get_mut()
                    .write_all(
                        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large",
                    )
                    .await;
                // Hold the connection open, reading nothing more.
                let _held = stream;
                std::future::pending::<()>().await;
            });
        }
    });
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
