//! `/ws`, `/stream` and `POST /drain`: a WebSocket that echoes and ticks
//! and is closed politely (close frame 1001, closing handshake, a clean end)
//! on the drain notify and at shutdown; an event stream that ticks, is told
//! to reconnect on the notify and ends politely at shutdown.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::net::SocketAddr;
use std::time::Duration;

use hatoba_demo_app::{Config, Stop, serve};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(10);

async fn start() -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<Stop>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = Config {
        tick: Duration::from_millis(50),
        ..Config::default()
    };
    let task = tokio::spawn(serve(listener, cfg, async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

async fn head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn open_websocket(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let h = head(&mut s).await.to_ascii_lowercase();
    assert!(h.starts_with("http/1.1 101"), "{h}");
    // RFC 6455's example key and its answer.
    assert!(
        h.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{h}"
    );
    s
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [7, 1, 9, 3];
    let mut out = vec![0x80 | opcode, 0x80 | u8::try_from(payload.len()).unwrap()];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.unwrap();
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let mut payload = vec![0u8; usize::from(h[1] & 0x7f)];
    s.read_exact(&mut payload).await.unwrap();
    (h[0] & 0x0f, payload)
}

/// Reads frames until a close frame; the text frames before it.
async fn until_close(s: &mut TcpStream) -> (Vec<String>, Vec<u8>) {
    let mut texts = Vec::new();
    loop {
        match read_frame(s).await {
            (0x8, status) => return (texts, status),
            (0x1, text) => texts.push(String::from_utf8(text).unwrap()),
            (op, _) => panic!("unexpected opcode {op}"),
        }
    }
}

/// Answers the close and reads to the end: true when the end is clean.
async fn answer_close(mut s: TcpStream) -> bool {
    s.write_all(&client_frame(0x8, &[0x03, 0xe8]))
        .await
        .unwrap();
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest)).await,
        Ok(Ok(_))
    ) && rest.is_empty()
}

async fn post_drain(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echoes_ticks_and_is_closed_politely_on_the_drain_notify() {
    let (addr, stop, task) = start().await;
    let mut ws = open_websocket(addr).await;
    ws.write_all(&client_frame(0x1, b"hello")).await.unwrap();
    let mut ticks = Vec::new();
    let mut echoed = false;
    let echo = tokio::time::timeout(DEADLINE, async {
        loop {
            let (op, payload) = read_frame(&mut ws).await;
            let text = String::from_utf8(payload).unwrap();
            assert_eq!(op, 0x1, "{text}");
            if text == "hello" {
                echoed = true;
            } else {
                ticks.push(text);
            }
            if echoed && !ticks.is_empty() {
                return;
            }
        }
    })
    .await;
    assert!(echo.is_ok(), "echoed: {echoed}, ticks {ticks:?}");
    post_drain(addr).await;
    let (more, status) = tokio::time::timeout(DEADLINE, until_close(&mut ws))
        .await
        .unwrap();
    ticks.extend(more);
    assert_eq!(status, [0x03, 0xe9], "1001: going away");
    assert!(!ticks.is_empty());
    for (i, t) in ticks.iter().enumerate() {
        assert_eq!(*t, format!("v1 tick {}", i + 1), "{ticks:?}");
    }
    assert!(answer_close(ws).await, "the WebSocket ended cleanly");
    // One opened after the notify is closed at once.
    let mut late = open_websocket(addr).await;
    let (_, status) = tokio::time::timeout(DEADLINE, until_close(&mut late))
        .await
        .unwrap();
    assert_eq!(status, [0x03, 0xe9]);
    assert!(answer_close(late).await);
    let _ = stop.send(());
    let stopped = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    assert_eq!(stopped.unwrap(), Stop::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ticks_is_told_to_reconnect_and_ends_politely_at_shutdown() {
    let (addr, stop, task) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let h = head(&mut s).await.to_ascii_lowercase();
    assert!(h.contains("content-type: text/event-stream"), "{h}");
    let mut raw = Vec::new();
    read_until(&mut s, &mut raw, "data: v1 tick 2\n\n").await;
    post_drain(addr).await;
    read_until(&mut s, &mut raw, "event: reconnect\ndata: v1\n\n").await;
    // The stream goes on after the notify, until shutdown.
    let mut after = Vec::new();
    read_until(&mut s, &mut after, "data: v1 tick").await;
    raw.extend_from_slice(&after);
    let _ = stop.send(());
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    raw.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("event: close\ndata: v1\n\n") && text.ends_with("0\r\n\r\n"),
        "{text}"
    );
    let stopped = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    assert_eq!(stopped.unwrap(), Stop::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_websockets_politely_and_waits_for_their_handshake() {
    let (addr, stop, mut task) = start().await;
    let mut ws = open_websocket(addr).await;
    let _ = stop.send(());
    let (_, status) = tokio::time::timeout(DEADLINE, until_close(&mut ws))
        .await
        .unwrap();
    assert_eq!(status, [0x03, 0xe9]);
    // Still waiting for the client's answer.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut task)
            .await
            .is_err(),
        "serve returned before the closing handshake"
    );
    assert!(answer_close(ws).await);
    let stopped = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    assert_eq!(stopped.unwrap(), Stop::Shutdown);
}

/// Reads `s` into `raw` until it holds `what`.
async fn read_until(s: &mut TcpStream, raw: &mut Vec<u8>, what: &str) {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(DEADLINE, async {
        while !String::from_utf8_lossy(raw).contains(what) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "ended early: {}", String::from_utf8_lossy(raw));
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what:?} in {}", String::from_utf8_lossy(raw)));
}
