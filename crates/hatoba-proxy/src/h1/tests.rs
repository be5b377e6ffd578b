//! The HTTP/1 loop's unit tests: head parsing, framing and answers.

use super::*;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

fn parse(raw: &str) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(raw.as_bytes());
    (parse_request(&mut buf), buf)
}

fn served(raw: &str) -> Request1 {
    match parse(raw).0 {
        Parsed::Request(r) => *r,
        Parsed::Partial => panic!("partial: {raw:?}"),
        Parsed::Hyper => panic!("left to hyper: {raw:?}"),
        Parsed::Refused(why) => panic!("refused ({why}): {raw:?}"),
    }
}

fn target(r: &Request1) -> &[u8] {
    r.head.get(r.target)
}

#[test]
fn ordinary_requests_are_served_here_with_their_framing() {
    let r = served("GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\n\r\n");
    assert_eq!(r.method, Method::GET);
    assert_eq!(target(&r), b"/a?b=c");
    let headers: Vec<_> = r.head.headers().collect();
    assert_eq!(
        headers,
        [
            (&b"Host"[..], &b"x"[..]),
            (b"X-Two", b"1"),
            (b"x-two", b"2")
        ]
    );
    assert_eq!(r.framing, Framing::Empty);
    assert!(r.keep_alive && !r.http10);

    let r = served("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n");
    assert_eq!(r.framing, Framing::Length(5));
    let r = served("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
    assert_eq!(r.framing, Framing::Chunked(Chunk::Size));
    let r = served("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.framing, Framing::Empty);
    let r = served("HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(r.method == Method::HEAD && !r.keep_alive);
    // Extension methods and odd but visible target bytes are forwarded as sent.
    let r = served("PURGE /a|b{c} HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.method.as_str(), target(&r)), ("PURGE", &b"/a|b{c}"[..]));
}

#[test]
fn http10_is_kept_alive_only_when_asked() {
    let r = served("GET / HTTP/1.0\r\n\r\n");
    assert!(r.http10 && !r.keep_alive);
    let r = served("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(r.http10 && r.keep_alive);
}

#[test]
fn unusual_and_malformed_heads_go_to_hyper() {
    for raw in [
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: keep-alive, upgrade\r\n\r\n",
        "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: five\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET http://example.com/ HTTP/1.1\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\n\r\n",
        "GET /caf\u{e9} HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\x03\x03\r\n\r\n",
    ] {
        let (parsed, buf) = parse(raw);
        assert!(matches!(parsed, Parsed::Hyper), "{raw:?}");
        assert_eq!(&buf[..], raw.as_bytes(), "left whole for hyper: {raw:?}");
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert!(matches!(parse(&raw).0, Parsed::Hyper));
    let huge = format!("GET / HTTP/1.1\r\nx: {}", "v".repeat(MAX_HEADER_BYTES));
    assert!(matches!(parse(&huge).0, Parsed::Hyper));
}

#[test]
fn smuggling_shapes_are_refused_here() {
    for (raw, why) in [
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            forward::FRAMING_REFUSED,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nHost: x\r\n\r\n",
            forward::FRAMING_REFUSED,
        ),
        ("GET / HTTP/1.1\r\n\r\n", forward::HOST_REFUSED),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
            forward::HOST_REFUSED,
        ),
        (
            "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
            forward::HOST_REFUSED,
        ),
    ] {
        assert!(
            matches!(parse(raw).0, Parsed::Refused(w) if w == why),
            "{raw:?}"
        );
    }
    // HTTP/1.0 needs no Host.
    assert!(served("GET / HTTP/1.0\r\n\r\n").http10);
}

#[test]
fn a_partial_head_waits_and_pipelined_heads_are_taken_one_at_a_time() {
    let (parsed, buf) = parse("GET / HTTP/1.1\r\nHost: x\r\n");
    assert!(matches!(parsed, Parsed::Partial));
    assert_eq!(buf.len(), 25);
    let mut buf = BytesMut::from(
        &b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET"[..],
    );
    let Parsed::Request(first) = parse_request(&mut buf) else {
        panic!("first")
    };
    assert_eq!(target(&first), b"/1");
    let Parsed::Request(second) = parse_request(&mut buf) else {
        panic!("second")
    };
    assert_eq!(target(&second), b"/2");
    assert!(matches!(parse_request(&mut buf), Parsed::Partial));
    assert_eq!(&buf[..], b"GET");
}

fn head(
    status: u16,
    headers: &[(&str, &str)],
    sent: Sent,
    hint: SizeHint,
    http10: bool,
    close: bool,
) -> String {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let mut out = Vec::new();
    let status = StatusCode::from_u16(status).unwrap();
    let headers = map
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    let framing = (sent, hint.exact().unwrap_or(0));
    write_head(&mut out, status, headers, framing, http10, close);
    String::from_utf8(out).unwrap()
}

#[test]
fn answer_heads_carry_the_framing_they_are_sent_with() {
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    // The backend's length list is replaced by the length sent.
    let h = head(
        200,
        &[("content-length", "2, 2"), ("date", date), ("x-a", "1")],
        Sent::Length,
        SizeHint::with_exact(2),
        false,
        false,
    );
    assert_eq!(
        h,
        format!("HTTP/1.1 200 OK\r\ndate: {date}\r\nx-a: 1\r\ncontent-length: 2\r\n\r\n")
    );
    let h = head(200, &[], Sent::Chunked, SizeHint::new(), false, true);
    assert!(h.starts_with("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ndate: "));
    assert!(h.ends_with(" GMT\r\nconnection: close\r\n\r\n"), "{h}");
    // HEAD keeps the backend's length; HTTP/1.0 is told it is kept alive.
    let h = head(
        200,
        &[("content-length", "10"), ("date", date)],
        Sent::Nothing,
        SizeHint::with_exact(0),
        true,
        false,
    );
    assert_eq!(
        h,
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\ndate: {date}\r\nconnection: keep-alive\r\n\r\n"
        )
    );
    let h = head(
        204,
        &[("content-length", "0"), ("date", date)],
        Sent::Nothing,
        SizeHint::with_exact(0),
        false,
        false,
    );
    assert_eq!(
        h,
        format!("HTTP/1.1 204 No Content\r\ndate: {date}\r\n\r\n")
    );
    // A status without a known reason keeps an empty one.
    let h = head(
        599,
        &[("date", date)],
        Sent::UntilClose,
        SizeHint::new(),
        true,
        true,
    );
    assert_eq!(
        h,
        format!("HTTP/1.1 599 \r\ndate: {date}\r\nconnection: close\r\n\r\n")
    );
}

#[test]
fn hop_by_hop_headers_are_dropped_in_any_case_and_others_kept_as_spelled() {
    let raw: [(&[u8], &[u8]); 9] = [
        (b"Connection", b"keep-alive"),
        (b"KEEP-ALIVE", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Proxy-Connection", b"x"),
        (b"Te", b"trailers"),
        (b"Trailer", b"x"),
        (b"Content-Length", b"7"),
        (b"Date", b"Sun, 06 Nov 1994 08:49:37 GMT"),
        (b"X-Keep-Alive-Ish", b"stays"),
    ];
    let mut out = Vec::new();
    let framing = (Sent::Chunked, 0);
    write_head(
        &mut out,
        StatusCode::OK,
        raw.into_iter(),
        framing,
        false,
        false,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nX-Keep-Alive-Ish: stays\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
}

#[test]
fn the_date_is_an_imf_fixdate() {
    let d = http_date();
    let text = std::str::from_utf8(&d).unwrap();
    assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    assert!(text.ends_with(" GMT"));
}
