//! `GET /api/v1/events` through `Server::serve_api` over the fake runtime:
//! the stream replays what is stored after the cursor (`Last-Event-ID` or
//! `after`) then follows, each id once in order; `follow=false` is one
//! JSON page; bad queries are the API's 400s; and 200 streams stay open
//! beside the API's 128 places while an ordinary call is still answered.

use crate::api::api;
use crate::fake::call;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// One open stream, read with the API's own parser.
pub(crate) struct Sse {
    body: hyper::body::Incoming,
    parser: hatoba_api::sse::Parser,
    ready: std::collections::VecDeque<hatoba_api::Event>,
    /// Comments and `retry` seen, besides events.
    raw: String,
}

impl Sse {
    /// Opens `GET path` with the token and `Last-Event-ID: last`; panics
    /// unless it is a 200 event stream.
    pub(crate) async fn open(addr: SocketAddr, token: &str, path: &str, last: Option<u64>) -> Sse {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::get(path)
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {token}"));
        if let Some(l) = last {
            req = req.header("last-event-id", l.to_string());
        }
        let resp = send
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.headers()["content-type"],
            hatoba_api::sse::CONTENT_TYPE,
            "{path}"
        );
        Sse {
            body: resp.into_body(),
            parser: hatoba_api::sse::Parser::new(),
            ready: std::collections::VecDeque::new(),
            raw: String::new(),
        }
    }

    /// The next event, within 10 s.
    pub(crate) async fn next(&mut self) -> hatoba_api::Event {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.ready.pop_front() {
                return e;
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .expect("an event within 10 s")
                .expect("the stream goes on")
                .unwrap();
            if let Some(data) = frame.data_ref() {
                self.raw.push_str(&String::from_utf8_lossy(data));
                for m in self.parser.push(data).unwrap() {
                    let e: hatoba_api::Event = serde_json::from_str(&m.data).unwrap();
                    assert_eq!(
                        m.id,
                        Some(e.id.to_string()),
                        "the message's id is the event's"
                    );
                    assert_eq!(m.event, e.kind, "the message's event is the kind");
                    self.ready.push_back(e);
                }
            }
        }
    }
}

fn page(answer: &str) -> hatoba_api::EventPage {
    serde_json::from_str(answer).unwrap_or_else(|e| panic!("not an EventPage ({e}): {answer}"))
}

fn ids(events: &[hatoba_api::Event]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

/// Deploys `web` `version` through the API: the store records events.
async fn deploy(addr: SocketAddr, token: &str, version: &str) -> String {
    let body = format!(r#"{{"service": "web", "version": "{version}"}}"#);
    let (code, answer) = call(
        addr,
        "POST",
        "/api/v1/deployments",
        Some(token),
        body.as_bytes(),
    )
    .await;
    assert_eq!(code, 202, "{answer}");
    let d: hatoba_api::Deployment = serde_json::from_str(&answer).unwrap();
    d.id
}

/// The stored page, once it holds at least `n` events.
async fn stored_at_least(addr: SocketAddr, token: &str, n: usize) -> hatoba_api::EventPage {
    let read = || async {
        let (code, answer) = call(
            addr,
            "GET",
            "/api/v1/events?follow=false&after=0&limit=1000",
            Some(token),
            b"",
        )
        .await;
        assert_eq!(code, 200, "{answer}");
        page(&answer)
    };
    hatoba_test_support::wait_for_async(Duration::from_secs(10), || async {
        read().await.events.len() >= n
    })
    .await
    .unwrap_or_else(|e| panic!("fewer than {n} events stored: {e}"));
    // Events are only ever added: this read holds at least as many.
    read().await
}

#[tokio::test]
async fn a_stream_replays_after_its_cursor_then_follows_each_id_once_in_order() {
    let a = api().await;
    let t = &a.token;
    // Opened before anything is stored: it gets everything live.
    let mut from_start = Sse::open(a.addr, t, "/api/v1/events", None).await;
    let d = deploy(a.addr, t, "v2").await;
    let stored = stored_at_least(a.addr, t, 3).await;
    let first: Vec<hatoba_api::Event> = {
        let mut got = Vec::new();
        for _ in 0..stored.events.len() {
            got.push(from_start.next().await);
        }
        got
    };
    assert_eq!(ids(&first), ids(&stored.events));
    assert!(
        first.windows(2).all(|w| w[0].id < w[1].id),
        "{:?}",
        ids(&first)
    );
    assert_eq!(first[0].kind, "created");
    assert_eq!(first[0].deployment, d);
    assert_eq!(
        (first[0].service.as_str(), first[0].environment.as_str()),
        ("web", "development")
    );
    assert!(from_start.raw.starts_with("retry: "), "{}", from_start.raw);
    assert_eq!(stored.last_id, stored.events.last().unwrap().id);

    // Resumed after the first event, by header and by query, with a filter.
    let cut = stored.events[0].id;
    let rest: Vec<u64> = ids(&stored.events[1..]);
    for (path, last) in [
        ("/api/v1/events".to_owned(), Some(cut)),
        (format!("/api/v1/events?after={cut}"), None),
        (
            format!("/api/v1/events?after=0&service=web&deployment={d}"),
            Some(cut),
        ),
    ] {
        let mut s = Sse::open(a.addr, t, &path, last).await;
        let mut got = Vec::new();
        for _ in 0..rest.len() {
            got.push(s.next().await.id);
        }
        assert_eq!(got, rest, "{path} after {last:?}");
    }

    // The page: the newest `limit` without a cursor, the first after one.
    let (code, answer) = call(
        a.addr,
        "GET",
        "/api/v1/events?follow=false&limit=2",
        Some(t),
        b"",
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    let newest = page(&answer);
    // The deployment goes on writing events meanwhile: the newest two then
    // are the last two of everything read since, up to the newer one (ids
    // follow commit order, invariant 18).
    let newer = newest.events.last().unwrap().id;
    let all = stored_at_least(a.addr, t, stored.events.len()).await;
    let upto: Vec<hatoba_api::Event> = all
        .events
        .iter()
        .filter(|e| e.id <= newer)
        .cloned()
        .collect();
    assert_eq!(ids(&newest.events), ids(&upto[upto.len() - 2..]));
    assert!(!newest.more);
    let (code, answer) = call(
        a.addr,
        "GET",
        &format!("/api/v1/events?follow=false&after={cut}&limit=1"),
        Some(t),
        b"",
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    let one = page(&answer);
    assert_eq!(ids(&one.events), vec![all.events[1].id]);
    assert_eq!(one.last_id, all.events[1].id);
    assert!(one.more, "{answer}");
}

#[tokio::test]
async fn bad_event_queries_are_the_apis_errors_naming_the_problem() {
    let a = api().await;
    for (path, code, says) in [
        (
            "/api/v1/events?follow=false&service=nope",
            404,
            "no service `nope`",
        ),
        (
            "/api/v1/events?follow=false&service=Not_A_Name",
            400,
            "not a service name",
        ),
        (
            "/api/v1/events?follow=false&deployment=d-nope",
            404,
            "no deployment",
        ),
        (
            "/api/v1/events?follow=false&deployment=d%201",
            400,
            "not a deployment id",
        ),
        (
            "/api/v1/events?follow=false&environment=%20",
            400,
            "not an environment name",
        ),
        ("/api/v1/events?follow=false&limit=0", 400, "1 to 1000"),
        ("/api/v1/events?follow=false&limit=1001", 400, "1 to 1000"),
        ("/api/v1/events?follow=maybe", 400, "`follow`"),
        ("/api/v1/events?after=x", 400, "`after`"),
        (
            "/api/v1/events?colour=blue",
            400,
            "unknown query parameter `colour`",
        ),
        ("/api/v1/events?service=nope", 404, "no service `nope`"),
    ] {
        let (got, answer) = call(a.addr, "GET", path, Some(&a.token), b"").await;
        assert_eq!(got, code, "{path}: {answer}");
        let e: hatoba_api::ApiError = serde_json::from_str(&answer).unwrap();
        assert_eq!(e.kind.http_status(), code, "{answer}");
        assert!(e.message.contains(says), "{path}: {answer}");
    }
    let auth = format!(
        "Authorization: Bearer {}\r\nLast-Event-ID: twelve\r\n",
        a.token
    );
    let (code, answer) = crate::fake::call_raw(a.addr, "GET", "/api/v1/events", &auth, b"").await;
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("Last-Event-ID"), "{answer}");
}

/// 200 subscribers, more than the API's 128 places: every stream opens
/// and gets every event, and `GET /api/v1/services` is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_streams_stay_open_while_the_api_still_answers() {
    const SUBSCRIBERS: usize = 200;
    let a = api().await;
    let mut streams = Vec::new();
    for _ in 0..SUBSCRIBERS {
        streams.push(Sse::open(a.addr, &a.token, "/api/v1/events?service=web", None).await);
    }
    let (code, answer) = call(a.addr, "GET", "/api/v1/services", Some(&a.token), b"").await;
    assert_eq!(code, 200, "{answer}");
    deploy(a.addr, &a.token, "v2").await;
    let stored = stored_at_least(a.addr, &a.token, 2).await;
    let want: Vec<u64> = ids(&stored.events[..2]);
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let n = want.len();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..n {
                    got.push(s.next().await.id);
                }
                (got, s)
            })
        })
        .collect();
    let mut open = Vec::new();
    for r in readers {
        let (got, s) = r.await.unwrap();
        assert_eq!(got, want);
        open.push(s);
    }
    // Still all open: an ordinary call is answered beside them.
    let (code, answer) = call(a.addr, "GET", "/api/v1/services", Some(&a.token), b"").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(open.len(), SUBSCRIBERS);
}

/// The state and send queue of the API's side of a loopback connection
/// (`local` the API's port, `remote` the client's), from `/proc/net/tcp`:
/// `None` once the socket is gone.
#[cfg(target_os = "linux")]
fn api_side(local: u16, remote: u16) -> Option<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
        if port(f[1])? != local || port(f[2])? != remote {
            return None;
        }
        let state = u8::from_str_radix(f[3], 16).ok()?;
        let tx = u64::from_str_radix(f[4].split(':').next()?, 16).ok()?;
        Some((state, tx))
    })
}

/// A client that opens the stream and never reads: what the server sends
/// piles up in the kernel's buffers of that one connection (the stream
/// itself holds one frame), and once the client has taken nothing for the
/// send timeout the server cuts it. A subscriber beside it gets every
/// event, in order, meanwhile, and the API still answers.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_and_the_others_get_every_event() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const ESTABLISHED: u8 = 1;
    let a = crate::api::api_with(hatoba_server::http::ApiLimits {
        stream_send_timeout: Duration::from_secs(1),
        stream_heartbeat: Duration::from_millis(100),
    })
    .await;
    // The silent client: a small receive buffer, so its window closes
    // after a few frames.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut silent = socket.connect(a.addr).await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    silent
        .write_all(
            format!(
                "GET /api/v1/events?after=0 HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\r\n",
                a.addr, a.token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut reader = Sse::open(a.addr, &a.token, "/api/v1/events?after=0", None).await;
    // Deploy one version after another: the silent client's window closes,
    // the server's send queue for it fills (the kernel's buffers are the
    // bound), it takes nothing more, and the server cuts it.
    let mut seen = Vec::new();
    let mut cut = false;
    let mut queued_most = 0;
    let started = std::time::Instant::now();
    for n in 2..=400 {
        let version = format!("v{n}");
        let body = format!(r#"{{"service": "web", "version": "{version}"}}"#);
        // The previous deployment may still be letting go of its slot.
        let id = std::sync::Mutex::new(None);
        hatoba_test_support::wait_for_async(Duration::from_secs(10), || async {
            let (code, answer) = call(
                a.addr,
                "POST",
                "/api/v1/deployments",
                Some(&a.token),
                body.as_bytes(),
            )
            .await;
            assert!(code == 202 || code == 409, "{code} {answer}");
            if code == 202 {
                let d: hatoba_api::Deployment = serde_json::from_str(&answer).unwrap();
                *id.lock().unwrap() = Some(d.id);
            }
            code == 202
        })
        .await
        .unwrap_or_else(|e| panic!("{version} was never accepted: {e}"));
        let id = id.into_inner().unwrap().unwrap();
        // Its end, read from the stream that does read.
        loop {
            let e = reader.next().await;
            seen.push(e.id);
            let to = e.data.as_ref().and_then(|d| d["to"].as_str());
            if e.deployment == id && e.kind == "status_changed" {
                match to {
                    Some("succeeded") => break,
                    Some("failed" | "aborted" | "rolled_back") => panic!("{version}: {e:?}"),
                    _ => {}
                }
            }
        }
        match api_side(a.addr.port(), silent_port) {
            Some((ESTABLISHED, queued)) => queued_most = queued_most.max(queued),
            _ => {
                cut = true;
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not cut after {n} deployments ({queued_most} bytes queued at most)"
        );
    }
    assert!(
        cut,
        "the client that never reads was not cut ({queued_most} bytes queued at most)"
    );
    assert!(queued_most > 0, "the silent client took everything");
    // The reading subscriber got every stored event, each once, in order.
    let stored = stored_at_least(a.addr, &a.token, seen.len()).await;
    let upto: Vec<u64> = ids(&stored.events)
        .into_iter()
        .filter(|id| id <= seen.last().unwrap())
        .collect();
    assert_eq!(seen, upto);
    // And the API still answers.
    let (code, answer) = call(a.addr, "GET", "/api/v1/services", Some(&a.token), b"").await;
    assert_eq!(code, 200, "{answer}");
    // Read now, the silent client gets what was queued, then the end.
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut got))
        .await
        .expect("the cut connection ends once its buffers are read")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got:.200}");
    let frames = got.matches("\nid: ").count() + usize::from(got.contains("\r\n\r\nid: "));
    assert!(
        frames > 0 && frames < seen.len(),
        "{frames} frames reached the silent client of {} sent",
        seen.len()
    );
}
