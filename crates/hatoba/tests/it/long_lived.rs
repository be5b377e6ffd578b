//! Long-lived connections through a real `hatoba up` (process runtime,
//! separate data plane): WebSockets and event streams open on v1's two
//! instances while v2 is rolled out with a drain notify. The demo app
//! closes its WebSockets politely on the notify and asks its streams to
//! reconnect; the streams' clients keep the old stream until the app ends
//! it at SIGTERM, so each drain runs to its end. Checked: no message or
//! tick lost, every WebSocket got its close frame and a clean end (no
//! reset), every old stream its polite end after the drain, reconnections
//! land on v2, both drains ran side by side (the deployment took about one
//! drain), `status` shows the connections left, the data plane's `/metrics`
//! keeps the streams out of the request latency and counts them apart, and
//! the drain events carry their counts.

use crate::support::{Sandbox, hatoba, latest, poll};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The drain of each old instance: long enough to see, short for a test.
const DRAIN: Duration = Duration::from_secs(5);
/// WebSockets and event streams opened on v1.
const SOCKETS: usize = 4;
const STREAMS: usize = 2;
/// The longest any read of a client waits.
const READ: Duration = Duration::from_secs(30);

fn spec(port: u16) -> String {
    format!(
        r#"app: long-lived-test
services:
  web:
    process:
      command: {exe}
      args: ["demo-app", "--version-label", "${{VERSION}}"]
      # The ticks pace the WebSocket clients too (a message a tick).
      env: {{DEMO_TICK: "20ms"}}
    replicas: 2
    route: {{listen: "127.0.0.1:{port}"}}
    health:
      readiness: {{path: /ready, period: 100ms}}
    drain: {{timeout: {drain}s, notify: {{path: /drain}}}}
    terminationGracePeriod: 5s
    strategy: {{rolling: {{maxSurge: 1, maxUnavailable: 0}}}}
"#,
        exe = env!("CARGO_BIN_EXE_hatoba"),
        drain = DRAIN.as_secs(),
    )
}

/// Reads a response head, byte by byte.
fn head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(READ)).unwrap();
    s
}

/// A client's (masked) frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// One server frame: opcode and payload.
fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l)?;
            usize::from(u16::from_be_bytes(l))
        }
        127 => panic!("no frame here is that big"),
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    Ok((h[0] & 0x0f, payload))
}

fn open_websocket(port: u16) -> TcpStream {
    let mut s = connect(port);
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let h = head(&mut s);
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    // The key of RFC 6455's example, and its answer.
    assert!(
        h.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{h}"
    );
    s
}

/// The version in a tick (`v1 tick 3`) and its number.
fn tick(text: &str) -> Option<(String, u64)> {
    let (version, n) = text.split_once(" tick ")?;
    Some((version.to_owned(), n.parse().ok()?))
}

/// What one WebSocket client saw, over the connections it had.
#[derive(Debug, Default)]
struct SocketReport {
    /// The version of each connection, in order.
    versions: Vec<String>,
    /// Messages sent, and echoed back in order.
    sent: u64,
    echoed: u64,
    /// Connections closed by the server while a message was in flight.
    unanswered_at_close: u64,
    /// A tick number was skipped or repeated.
    tick_gap: bool,
    /// The status of each close frame that came.
    close_statuses: Vec<u16>,
    /// Connections that ended with an EOF after the closing handshake (not
    /// a reset, not a timeout).
    clean_ends: u64,
}

/// Talks on one WebSocket until the server closes it: a message, its echo,
/// then the next tick before the next message (a client at the server's
/// pace, not a flood), checking the ticks (`last_tick`: the last one read
/// already); then answers the close and reads to the end.
fn talk(mut s: TcpStream, mut last_tick: u64, r: &mut SocketReport) {
    let deadline = Instant::now() + Duration::from_secs(40);
    'talk: while Instant::now() < deadline {
        r.sent += 1;
        let message = format!("m{}", r.sent);
        s.write_all(&client_frame(0x1, message.as_bytes())).unwrap();
        let mut echoed = false;
        loop {
            let (op, payload) = read_frame(&mut s).unwrap();
            let text = String::from_utf8_lossy(&payload).into_owned();
            match op {
                0x8 => {
                    if !echoed {
                        r.unanswered_at_close += 1;
                    }
                    if let Some(b) = payload.get(..2) {
                        r.close_statuses.push(u16::from_be_bytes([b[0], b[1]]));
                    }
                    break 'talk;
                }
                0x1 if !echoed && text == message => {
                    r.echoed += 1;
                    echoed = true;
                }
                0x1 => match tick(&text) {
                    Some((_, n)) => {
                        r.tick_gap |= n != last_tick + 1;
                        last_tick = n;
                        if echoed {
                            break;
                        }
                    }
                    None => panic!("neither a tick nor the echo of {message}: {text:?}"),
                },
                other => panic!("unexpected opcode {other}"),
            }
        }
    }
    // The closing handshake's answer, then the server's end.
    s.write_all(&client_frame(0x8, &[0x03, 0xe8])).unwrap();
    let mut rest = Vec::new();
    if s.read_to_end(&mut rest).is_ok() {
        r.clean_ends += 1;
    }
}

/// Opens a WebSocket and reads its first tick: the version it reached.
fn first_tick(port: u16) -> (TcpStream, String, u64) {
    let mut s = open_websocket(port);
    loop {
        let (op, payload) = read_frame(&mut s).unwrap();
        if op == 0x1
            && let Some((version, n)) = tick(&String::from_utf8_lossy(&payload))
        {
            return (s, version, n);
        }
    }
}

/// A chatty WebSocket client that reconnects whenever the server closes,
/// until it reaches v2 (at most 4 connections): during a rolling update a
/// reconnection may reach the other old instance, which closes it at its
/// own drain.
fn websocket_client(port: u16, opened: &std::sync::mpsc::Sender<()>) -> SocketReport {
    let mut r = SocketReport::default();
    let (mut s, mut version, mut n) = first_tick(port);
    let _ = opened.send(());
    for _ in 0..4 {
        r.versions.push(version.clone());
        if version == "v2" {
            // Closed by the client this time.
            s.write_all(&client_frame(0x8, &[0x03, 0xe8])).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
            break;
        }
        talk(s, n, &mut r);
        (s, version, n) = first_tick(port);
    }
    r
}

fn open_stream(port: u16) -> TcpStream {
    let mut s = connect(port);
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let h = head(&mut s);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    s
}

/// What one event-stream client saw.
#[derive(Debug, Default)]
struct StreamReport {
    first_version: String,
    tick_gap: bool,
    /// `event: reconnect` came, and when.
    told: Option<Instant>,
    /// The version of the stream opened when told.
    reconnected_to: String,
    /// The old stream ended with `event: close` and the end of the body,
    /// then an EOF or the connection kept alive (no reset).
    polite_end: bool,
    /// How long after `event: reconnect` the old stream ended.
    held: Duration,
}

/// The data lines and events of a chunked event stream read so far.
fn events(raw: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(raw)
        .lines()
        .filter(|l| l.starts_with("data: ") || l.starts_with("event: "))
        .map(str::to_owned)
        .collect()
}

/// Opens a stream, reads its first tick and leaves: the version it reached.
fn stream_version(port: u16) -> String {
    let mut s = open_stream(port);
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some((version, _)) = events(&raw)
            .iter()
            .find_map(|l| l.strip_prefix("data: ").and_then(tick))
        {
            return version;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the new stream ended at once");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Reads a stream, checking its ticks; when told to reconnect opens a new
/// stream (and notes its version) but keeps reading the old one to its end.
fn stream_client(mut s: TcpStream, port: u16) -> StreamReport {
    let mut r = StreamReport::default();
    let mut raw = Vec::new();
    let mut seen = 0;
    let mut last_tick = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => panic!("the stream failed: {e}"),
        };
        raw.extend_from_slice(&buf[..n]);
        let all = events(&raw);
        for line in &all[seen..] {
            if let Some((version, n)) = line.strip_prefix("data: ").and_then(tick) {
                if r.first_version.is_empty() {
                    r.first_version = version;
                }
                r.tick_gap |= n != last_tick + 1;
                last_tick = n;
            } else if line == "event: reconnect" && r.told.is_none() {
                r.told = Some(Instant::now());
                // During a rolling update the other old instance may answer:
                // try again (a few times at most) until v2 does.
                for _ in 0..8 {
                    r.reconnected_to = stream_version(port);
                    if r.reconnected_to == "v2" {
                        break;
                    }
                }
            }
        }
        seen = all.len();
        if raw.ends_with(b"0\r\n\r\n") {
            break;
        }
    }
    r.polite_end = events(&raw).iter().any(|l| l == "event: close") && raw.ends_with(b"0\r\n\r\n");
    r.held = r.told.map(|t| t.elapsed()).unwrap_or_default();
    r
}

/// The sum of a `/metrics` family's samples for v1 of `web` whose labels
/// contain `with`.
fn v1_sum(metrics: &str, family: &str, with: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(&format!("{family}{{"))
                && l.contains("service=\"web\"")
                && l.contains("version=\"v1\"")
                && l.contains(with)
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn data_plane_metrics(state: &std::path::Path) -> String {
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("server.json")).unwrap()).unwrap();
    let admin = info["admin"]
        .as_str()
        .expect("server.json names the admin address");
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(READ)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

#[test]
fn websockets_and_streams_drain_in_parallel_politely_and_are_measured_apart() {
    let sb = Sandbox::new(spec);
    let _up = sb.up(&[]);
    sb.deploy_ok("v1");
    // Opened one after another, each counted in flight as soon as it is
    // open, so they spread over both instances (least in flight first).
    let sockets: Vec<_> = (0..SOCKETS)
        .map(|_| {
            let port = sb.port;
            let (tx, rx) = std::sync::mpsc::channel();
            let h = std::thread::spawn(move || websocket_client(port, &tx));
            // Open (its first tick read) before the next one opens.
            rx.recv_timeout(READ).unwrap();
            h
        })
        .collect();
    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            let s = open_stream(sb.port);
            let port = sb.port;
            std::thread::spawn(move || stream_client(s, port))
        })
        .collect();

    let started = Instant::now();
    let mut deploy = std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .arg("--state-dir")
        .arg(&sb.state)
        .args(["deploy", "web", "--version", "v2", "--wait=complete"])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deploy_guard = scopeguard(&mut deploy);
    // While the old instances drain, status shows what each waits for: its
    // stream, once the WebSockets closed at the notify.
    let draining = poll(
        "both old instances draining with 1 connection left",
        2 * DRAIN,
        || {
            let out = hatoba(&sb.state)
                .args(["status", "-o", "json"])
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let lines: Vec<String> = v["services"][0]["instances"]
                .as_array()?
                .iter()
                .filter(|i| i["connections_left"] == 1)
                .filter_map(|i| i["draining"].as_str().map(str::to_owned))
                .collect();
            (lines.len() == 2).then_some(lines)
        },
    );
    for line in &draining {
        assert!(
            line.starts_with("draining: 1 connection left, up to ")
                && line.ends_with(" left, then SIGTERM, SIGKILL 5s later"),
            "{line}"
        );
    }
    let text = hatoba(&sb.state).args(["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("draining: 1 connection left"),
        "status in words:\n{text}"
    );
    let status = deploy_guard.wait();
    let took = started.elapsed();
    eprintln!("the deployment of v2 took {took:?}, with a drain of {DRAIN:?}");
    assert!(status.success(), "the deployment of v2 failed");
    // Each drain waited for its stream to its end: one drain at least, and
    // side by side, well under two.
    assert!(
        took >= DRAIN && took < 2 * DRAIN,
        "the deployment took {took:?} with a drain of {DRAIN:?}"
    );

    for (i, h) in sockets.into_iter().enumerate() {
        let r = h.join().unwrap();
        // On v1 first, on v2 in the end, every v1 connection closed by the
        // server with a close frame (1001, going away) and a clean end.
        assert_eq!(
            r.versions.first().map(String::as_str),
            Some("v1"),
            "WebSocket {i}: {r:?}"
        );
        assert_eq!(
            r.versions.last().map(String::as_str),
            Some("v2"),
            "WebSocket {i}: {r:?}"
        );
        let on_v1 = r.versions.len() as u64 - 1;
        assert_eq!(
            r.close_statuses,
            vec![1001; on_v1 as usize],
            "WebSocket {i}: {r:?}"
        );
        assert_eq!(
            r.clean_ends, on_v1,
            "WebSocket {i} ended with a reset: {r:?}"
        );
        assert!(r.sent >= 2, "WebSocket {i} talked: {r:?}");
        // Every message answered, but the one in flight at each close.
        assert_eq!(
            r.echoed + r.unanswered_at_close,
            r.sent,
            "WebSocket {i} lost messages: {r:?}"
        );
        assert!(!r.tick_gap, "WebSocket {i} missed a tick: {r:?}");
    }
    for (i, h) in streams.into_iter().enumerate() {
        let r = h.join().unwrap();
        assert_eq!(r.first_version, "v1", "stream {i}: {r:?}");
        assert!(!r.tick_gap, "stream {i} missed a tick: {r:?}");
        assert!(r.told.is_some(), "stream {i} was told to reconnect: {r:?}");
        assert_eq!(r.reconnected_to, "v2", "stream {i}: {r:?}");
        assert!(r.polite_end, "stream {i} was cut: {r:?}");
        // Not cut before its drain ended (the notify comes as it begins).
        assert!(
            r.held >= DRAIN - Duration::from_millis(500),
            "stream {i} ended {:?} after the notify",
            r.held
        );
    }

    // The data plane measured the long-lived connections apart.
    let metrics = data_plane_metrics(&sb.state);
    let total = (SOCKETS + STREAMS) as f64;
    assert!(
        v1_sum(&metrics, "hatoba_long_lived_opened_total", "") >= total,
        "{metrics}"
    );
    assert_eq!(
        v1_sum(
            &metrics,
            "hatoba_long_lived_ended_total",
            "end=\"abnormal\""
        ),
        0.0,
        "{metrics}"
    );
    assert!(
        v1_sum(&metrics, "hatoba_long_lived_duration_seconds_sum", "")
            >= STREAMS as f64 * (DRAIN.as_secs_f64() - 0.5),
        "the streams lived a drain or so each:\n{metrics}"
    );
    // Their heads are the only requests v1 had through the proxy: time to
    // the head, never the life of the stream.
    let latency = v1_sum(&metrics, "http_request_duration_seconds_sum", "");
    assert!(
        latency < 1.0,
        "{latency} s of request latency for v1:\n{metrics}"
    );

    // The drain events, with their counts.
    let id = latest(&sb.state)["id"].as_str().unwrap().to_owned();
    let out = hatoba(&sb.state)
        .args(["events", "--deployment", &id, "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let events: Vec<hatoba_api::Event> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: &str| -> Vec<&hatoba_api::Event> {
        events.iter().filter(|e| e.kind == kind).collect()
    };
    assert_eq!(of("instance_draining").len(), 2, "{events:#?}");
    let drained = of("instance_drained");
    assert_eq!(drained.len(), 2, "{events:#?}");
    let open_at_start: u64 = drained
        .iter()
        .filter_map(|e| e.data.as_ref()?["connections"].as_u64())
        .sum();
    // The WebSockets and streams opened on v1, and those that reconnected
    // to the other old instance.
    assert!(open_at_start >= total as u64, "{drained:#?}");
    let told: u64 = of("instance_draining")
        .iter()
        .filter_map(|e| e.data.as_ref()?["connections"].as_u64())
        .sum();
    assert_eq!(told, open_at_start, "counted once, as each drain began");
    for e in &drained {
        let data = e.data.as_ref().unwrap();
        // Each held to the end by its stream.
        assert_eq!(data["in_time"], false, "{e:#?}");
        assert_eq!(data["left"], 1, "{e:#?}");
    }
}

/// Waits for a child process, killing it if the test fails first.
struct ChildGuard<'a>(Option<&'a mut std::process::Child>);

fn scopeguard(child: &mut std::process::Child) -> ChildGuard<'_> {
    ChildGuard(Some(child))
}

impl ChildGuard<'_> {
    fn wait(mut self) -> std::process::ExitStatus {
        let child = self.0.take().unwrap();
        child.wait().unwrap()
    }
}

impl Drop for ChildGuard<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
