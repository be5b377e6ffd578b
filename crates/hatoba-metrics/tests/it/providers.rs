//! The analysis providers against real and fake outside parts: a real
//! Prometheus (Debian's, via `hatoba-test-support`) scraping two in-process
//! demo apps, one answering 30 % errors, judged with the seeds' PromQL;
//! fake HTTP servers (HTML error pages, garbage, silence, every JSON shape)
//! for the fail-safe rules of `prometheus` and `webhook`; `/bin/sh` for
//! `command` (exit status, a number, garbage, a timeout that kills the
//! process group).

use hatoba_metrics::provider::{self, Args, Measurement};
use hatoba_spec::{CommandProvider, PrometheusProvider, WebhookProvider};
use hatoba_test_support::{TempPrometheus, external, wait_for_async};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

fn args() -> Args {
    Args {
        service: "web".into(),
        version: "v2".into(),
        canary_version: "v2".into(),
        stable_version: Some("v1".into()),
        env: "prod".into(),
        template_args: BTreeMap::new(),
    }
}

fn with_arg(name: &str, value: &str) -> Args {
    let mut a = args();
    a.template_args.insert(name.into(), value.into());
    a
}

fn prom(address: &str, query: &str) -> PrometheusProvider {
    PrometheusProvider {
        address: address.to_owned(),
        query: query.to_owned(),
        timeout: Duration::from_secs(5),
    }
}

fn inconclusive(m: &Measurement) -> &str {
    m.reason()
        .unwrap_or_else(|| panic!("expected inconclusive, got {m:?}"))
}

/// Aborts a task when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A tiny HTTP server answering every connection with the same bytes (or
/// never, for `None`), remembering each request's head and body.
struct Fake {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    _task: Task,
}

impl Fake {
    async fn start(reply: Option<Vec<u8>>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (req, conns) = (Arc::clone(&requests), Arc::clone(&connections));
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let request = read_request(&mut stream).await;
                req.lock().unwrap().push(request);
                match &reply {
                    Some(bytes) => {
                        let _ = stream.write_all(bytes).await;
                        let _ = stream.shutdown().await;
                    }
                    None => held.push(stream), // silence, connection open
                }
            }
        });
        Fake {
            addr,
            requests,
            connections,
            _task: Task(task),
        }
    }

    async fn answering(status: u16, content_type: &str, body: &str) -> Fake {
        Fake::start(Some(response(status, content_type, body.as_bytes()))).await
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn last_request(&self) -> String {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} Whatever\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The request's head and body (by `Content-Length`), as text.
async fn read_request(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&buf).into_owned(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn vector(series: &[(&str, &str)]) -> String {
    let items: Vec<String> = series
        .iter()
        .map(|(labels, v)| format!(r#"{{"metric":{labels},"value":[1700000000.5,"{v}"]}}"#))
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        items.join(",")
    )
}

// --- prometheus, against fakes -------------------------------------------

#[tokio::test]
async fn prometheus_reads_one_series_and_sends_the_substituted_query() {
    let fake = Fake::answering(200, "application/json", &vector(&[("{}", "0.975")])).await;
    let p = prom(
        &fake.url(),
        r#"sum(rate(http_requests_total{service="{{service}}",version="{{ canary_version }}",status=~"2.."}[30s]))"#,
    );
    assert_eq!(
        provider::prometheus(&p, &args()).await,
        Measurement::Value(0.975)
    );
    let request = fake.last_request();
    let line = request.lines().next().unwrap();
    assert_eq!(
        line,
        "GET /api/v1/query?query=sum%28rate%28http_requests_total%7Bservice%3D%22web%22%2Cversion%3D%22v2%22%2Cstatus%3D~%222..%22%7D%5B30s%5D%29%29 HTTP/1.1"
    );
    assert!(
        request.contains(&format!("host: {}", fake.addr)),
        "{request}"
    );

    // A path prefix in the address is kept.
    let p = prom(&format!("{}/prom/", fake.url()), "up");
    assert_eq!(
        provider::prometheus(&p, &args()).await,
        Measurement::Value(0.975)
    );
    assert!(
        fake.last_request()
            .starts_with("GET /prom/api/v1/query?query=up ")
    );
}

#[tokio::test]
async fn prometheus_answers_without_one_finite_number_are_inconclusive() {
    let cases: Vec<(String, &str)> = vec![
        (vector(&[]), "no data: the query matched no series"),
        (
            vector(&[
                (r#"{"instance":"a:1","job":"demo"}"#, "1"),
                (r#"{"instance":"b:2","job":"demo"}"#, "2"),
            ]),
            r#"the query matched 2 series, it must give one number (aggregate it, e.g. with sum()): {instance="a:1", job="demo"}, {instance="b:2", job="demo"}"#,
        ),
        (vector(&[("{}", "NaN")]), "value is NaN"),
        (vector(&[("{}", "+Inf")]), "value is +Inf"),
        (
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"-Inf"]}}"#.into(),
            "value is -Inf",
        ),
        (
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into(),
            "range vector",
        ),
        (r#"{"status":"success"}"#.into(), "not Prometheus's JSON"),
    ];
    for (body, reason) in cases {
        let fake = Fake::answering(200, "application/json", &body).await;
        let m = provider::prometheus(&prom(&fake.url(), "x"), &args()).await;
        let why = inconclusive(&m);
        assert!(
            why.starts_with(&format!("prometheus at {}", fake.addr)),
            "{why}"
        );
        assert!(why.contains(reason), "{body}: {why}");
    }
}

#[tokio::test]
async fn prometheus_errors_pages_and_garbage_are_inconclusive_with_the_reason() {
    let fake = Fake::answering(
        400,
        "application/json",
        r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:6: parse error: unclosed left parenthesis"}"#,
    )
    .await;
    let m = provider::prometheus(&prom(&fake.url(), "sum(up"), &args()).await;
    assert_eq!(
        inconclusive(&m),
        format!(
            "prometheus at {} answered HTTP 400 with an error: bad_data: invalid parameter \"query\": 1:6: parse error: unclosed left parenthesis",
            fake.addr
        )
    );

    let page = format!(
        "<html>\n<head><title>503 Service Temporarily Unavailable</title></head>\n<body>{}</body></html>",
        "x".repeat(500)
    );
    let fake = Fake::answering(503, "text/html", &page).await;
    let m = provider::prometheus(&prom(&fake.url(), "up"), &args()).await;
    let why = inconclusive(&m);
    assert!(
        why.starts_with(&format!(
            "prometheus at {} answered HTTP 503 that is not Prometheus's JSON: <html> <head><title>503 Service Temporarily Unavailable</title>",
            fake.addr
        )),
        "{why}"
    );
    assert!(why.ends_with('…') && why.len() < 400, "{why}");

    let fake = Fake::start(Some(b"\x00\x01garbage, not HTTP at all\r\n\r\n".to_vec())).await;
    let m = provider::prometheus(&prom(&fake.url(), "up"), &args()).await;
    let why = inconclusive(&m);
    assert!(why.contains("the HTTP exchange with"), "{why}");

    // A 2 MiB answer is refused, not read whole.
    let big = format!(r#"{{"status":"success","pad":"{}"}}"#, "a".repeat(2 << 20));
    let fake = Fake::answering(200, "application/json", &big).await;
    let m = provider::prometheus(&prom(&fake.url(), "up"), &args()).await;
    assert!(
        inconclusive(&m).contains("answered more than 1048576 bytes"),
        "{m:?}"
    );
}

#[tokio::test]
async fn prometheus_silent_or_down_is_inconclusive_within_the_timeout() {
    let silent = Fake::start(None).await;
    let mut p = prom(&silent.url(), "up");
    p.timeout = Duration::from_millis(300);
    let start = Instant::now();
    let m = provider::prometheus(&p, &args()).await;
    assert_eq!(
        inconclusive(&m),
        format!("prometheus at {}: no answer within 300ms", silent.addr)
    );
    // The timeout set applies, not the default one, and the answer comes
    // only once it has passed.
    let took = start.elapsed();
    assert!(
        took >= p.timeout && took < provider::DEFAULT_PROMETHEUS_TIMEOUT,
        "{took:?}"
    );

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let p = prom(&format!("http://{closed}"), "up");
    let start = Instant::now();
    let m = provider::prometheus(&p, &args()).await;
    let why = inconclusive(&m);
    assert!(
        why.starts_with(&format!("prometheus: cannot connect to {closed}: ")),
        "{why}"
    );
    // A refused connection is said at once, not after the timeout.
    assert!(start.elapsed() < p.timeout, "{:?}", start.elapsed());

    let m = provider::prometheus(&prom("https://127.0.0.1:9090", "up"), &args()).await;
    assert_eq!(
        inconclusive(&m),
        "prometheus at https://127.0.0.1:9090: https is not supported for prometheus yet"
    );
}

#[tokio::test]
async fn an_unknown_placeholder_sends_nothing() {
    let fake = Fake::answering(200, "application/json", &vector(&[("{}", "1")])).await;
    let m = provider::prometheus(&prom(&fake.url(), r#"up{x="{{nope}}"}"#), &args()).await;
    assert!(
        inconclusive(&m).contains("query not sent: unknown placeholder `{{nope}}`"),
        "{m:?}"
    );
    let m = provider::prometheus(&prom(&fake.url(), r#"up{x="{{service"}"#), &args()).await;
    assert!(inconclusive(&m).contains("is never closed"), "{m:?}");
    let mut first = args();
    first.stable_version = None;
    let m = provider::prometheus(&prom(&fake.url(), "up{v=\"{{stable_version}}\"}"), &first).await;
    assert!(inconclusive(&m).contains("no stable version"), "{m:?}");
    assert_eq!(fake.connections.load(Ordering::SeqCst), 0);
}

// --- webhook --------------------------------------------------------------

fn hook(url: &str, json_path: &str) -> WebhookProvider {
    WebhookProvider {
        url: url.to_owned(),
        method: "GET".to_owned(),
        headers: BTreeMap::new(),
        body: None,
        json_path: json_path.to_owned(),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn webhook_reads_the_number_at_the_json_path() {
    let fake = Fake::answering(
        200,
        "application/json",
        r#"{"data":{"checks":[{"ok":false,"rate":"0.25"},{"ok":true,"latency":12.5,"none":null}]}}"#,
    )
    .await;
    let url = format!("{}/check/{{{{service}}}}?env={{{{env}}}}", fake.url());
    let read = |path: &str| {
        let p = hook(&url, path);
        async move { provider::webhook(&p, &args()).await }
    };
    assert_eq!(
        read("$.data.checks[1].latency").await,
        Measurement::Value(12.5)
    );
    assert!(
        fake.last_request()
            .starts_with("GET /check/web?env=prod HTTP/1.1")
    );
    assert_eq!(read("$.data.checks[1].ok").await, Measurement::Value(1.0));
    assert_eq!(read("$.data.checks[0].ok").await, Measurement::Value(0.0));
    assert_eq!(
        read("$['data'].checks[0].rate").await,
        Measurement::Value(0.25)
    );

    let m = read("$.data.checks[2].ok").await;
    assert_eq!(
        inconclusive(&m),
        format!(
            "webhook {}/check/web: `$.data.checks[2].ok` found nothing: `$.data.checks` is \
             [{{\"ok\":false,\"rate\":\"0.25\"}},{{\"latency\":12.5,\"none\":null,\"ok\":true}}], with no element [2]",
            fake.url()
        )
    );
    let m = read("$.data.result").await;
    assert!(inconclusive(&m).contains("with no key `result`"), "{m:?}");
    let m = read("$.data.checks[1].none").await;
    assert!(
        inconclusive(&m).ends_with("`$.data.checks[1].none` is null, not a number"),
        "{m:?}"
    );
    let m = read("$.data").await;
    assert!(inconclusive(&m).contains("not a number"), "{m:?}");
    let m = read("data.x").await;
    assert!(
        inconclusive(&m).contains("not called: bad JSON path `data.x`"),
        "{m:?}"
    );
}

#[tokio::test]
async fn webhook_posts_its_body_and_headers() {
    let fake = Fake::answering(200, "application/json", r#"{"passed": 3}"#).await;
    let mut p = hook(&fake.url(), "$.passed");
    p.method = "POST".into();
    p.headers
        .insert("Authorization".into(), "Bearer {{token}}".into());
    p.body = Some(r#"{"service":"{{service}}","version":"{{version}}"}"#.into());
    let m = provider::webhook(&p, &with_arg("token", "s3cret")).await;
    assert_eq!(m, Measurement::Value(3.0));
    let request = fake.last_request();
    assert!(request.starts_with("POST / HTTP/1.1\r\n"), "{request}");
    assert!(
        request.contains("authorization: Bearer s3cret\r\n"),
        "{request}"
    );
    assert!(
        request.contains("content-type: application/json\r\n"),
        "{request}"
    );
    assert!(
        request.ends_with("\r\n\r\n{\"service\":\"web\",\"version\":\"v2\"}"),
        "{request}"
    );

    p.headers.insert("X-Other".into(), "{{missing}}".into());
    let m = provider::webhook(&p, &with_arg("token", "s3cret")).await;
    assert!(inconclusive(&m).contains("header `X-Other`: unknown placeholder `{{missing}}`"));
    assert_eq!(fake.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn webhook_failures_are_inconclusive_with_the_reason() {
    let fake = Fake::answering(503, "text/plain", "overloaded, try later").await;
    let m = provider::webhook(&hook(&fake.url(), "$.x"), &args()).await;
    assert_eq!(
        inconclusive(&m),
        format!(
            "webhook {}: answered HTTP 503: overloaded, try later",
            fake.url()
        )
    );

    let fake = Fake::answering(200, "text/html", "<html>hello</html>").await;
    let m = provider::webhook(&hook(&fake.url(), "$.x"), &args()).await;
    assert!(
        inconclusive(&m).ends_with("answered HTTP 200 that is not JSON: <html>hello</html>"),
        "{m:?}"
    );

    let fake = Fake::answering(200, "application/json", r#"{"x": "NaN"}"#).await;
    let m = provider::webhook(&hook(&fake.url(), "$.x"), &args()).await;
    assert!(inconclusive(&m).ends_with("value is NaN"), "{m:?}");

    let silent = Fake::start(None).await;
    let mut p = hook(&silent.url(), "$.x");
    p.timeout = Duration::from_millis(200);
    let start = Instant::now();
    let m = provider::webhook(&p, &args()).await;
    assert!(
        inconclusive(&m).ends_with("no answer within 200ms"),
        "{m:?}"
    );
    // The timeout set applies, not the default one.
    let took = start.elapsed();
    assert!(
        took >= p.timeout && took < provider::DEFAULT_WEBHOOK_TIMEOUT,
        "{took:?}"
    );

    let m = provider::webhook(&hook("https://example.invalid/x", "$.x"), &args()).await;
    assert!(
        inconclusive(&m).ends_with("https is not supported for webhooks yet"),
        "{m:?}"
    );
}

// --- command --------------------------------------------------------------

fn sh(script: &str) -> CommandProvider {
    CommandProvider {
        command: "/bin/sh".to_owned(),
        args: vec!["-c".to_owned(), script.to_owned()],
        timeout: Duration::from_secs(10),
    }
}

async fn run(script: &str, dir: &Path) -> Measurement {
    provider::command(&sh(script), &args(), dir).await
}

#[tokio::test]
async fn command_exit_status_or_the_number_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(run("exit 0", d).await, Measurement::Value(1.0));
    for (script, code) in [("echo 0.97; exit 3", 3), ("exit 1", 1)] {
        let m = run(script, d).await;
        assert_eq!(m.value(), Some(0.0), "{m:?}");
        let Measurement::Failed(how) = m else {
            panic!("{script}: {m:?}");
        };
        assert!(how.ends_with(&format!("exited {code}")), "{how}");
    }
    assert_eq!(
        run(
            "echo starting; echo 'checked 10 pages' >&2; printf '  0.97  \\n\\n'",
            d
        )
        .await,
        Measurement::Value(0.97)
    );
    assert_eq!(run("echo 1e3", d).await, Measurement::Value(1000.0));

    let m = run("echo 'all good'", d).await;
    assert!(
        inconclusive(&m).starts_with(
            "command `/bin/sh`: exited 0 but its last line of output is not a number: `all good`"
        ),
        "{m:?}"
    );
    let m = run("echo 0,95; echo oops >&2", d).await;
    assert!(inconclusive(&m).ends_with("(stderr: oops)"), "{m:?}");
    let m = run("echo nan", d).await;
    assert_eq!(inconclusive(&m), "command `/bin/sh`: value is NaN");
    let m = run("kill -KILL $$", d).await;
    assert_eq!(inconclusive(&m), "command `/bin/sh`: was killed by SIGKILL");

    // Output past the limit: only its tail is kept, the last line still counts.
    assert_eq!(
        run("yes 5 | head -c 1000000; echo; echo 0.5", d).await,
        Measurement::Value(0.5)
    );
}

#[tokio::test]
async fn command_gets_its_directory_environment_and_arguments() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("marker"), "").unwrap();
    std::fs::write(
        dir.path().join("check.sh"),
        "#!/bin/sh\necho \"$1\" | grep -q web-v2 && echo 0.5\n",
    )
    .unwrap();
    let p = CommandProvider {
        command: "/bin/sh".to_owned(),
        args: vec![
            "-c".to_owned(),
            r#"[ -f marker ] && [ "$HATOBA_SERVICE" = web ] && [ "$HATOBA_VERSION" = v2 ] \
               && [ "$HATOBA_CANARY_VERSION" = v2 ] && [ "$HATOBA_STABLE_VERSION" = v1 ] \
               && [ "$HATOBA_ENV" = prod ] && [ "$HATOBA_ARG_CANARY_WEIGHT" = 10 ] \
               && [ "$1" = web-v2 ] && [ "$2" = 10 ]"#
                .to_owned(),
            "sh".to_owned(),
            "{{service}}-{{version}}".to_owned(),
            "{{canary-weight}}".to_owned(),
        ],
        timeout: Duration::from_secs(10),
    };
    let a = with_arg("canary-weight", "10");
    assert_eq!(
        provider::command(&p, &a, dir.path()).await,
        Measurement::Value(1.0)
    );

    // A relative program with a slash is found from the working directory.
    let relative = CommandProvider {
        command: "sh".to_owned(),
        args: vec![
            "./check.sh".to_owned(),
            "{{service}}-{{version}}".to_owned(),
        ],
        timeout: Duration::from_secs(10),
    };
    assert_eq!(
        provider::command(&relative, &a, dir.path()).await,
        Measurement::Value(0.5)
    );

    let missing = CommandProvider {
        command: "./no-such-check".to_owned(),
        args: vec![],
        timeout: Duration::from_secs(10),
    };
    let m = provider::command(&missing, &a, dir.path()).await;
    assert!(inconclusive(&m).contains("cannot start"), "{m:?}");

    let mut unknown = p.clone();
    unknown.args.push("{{nope}}".into());
    let m = provider::command(&unknown, &a, dir.path()).await;
    assert!(
        inconclusive(&m).contains("not run: unknown placeholder `{{nope}}`"),
        "{m:?}"
    );
}

/// Whether `pid` is gone (or a zombie waiting for a parent that may not reap).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn command_timeout_kills_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    // How long the background sleeps hold on: what a provider that waited
    // for them (or for its default timeout) would take.
    const HELD: Duration = Duration::from_secs(30);
    let mut p = sh(&format!(
        "sleep {} & echo $! > child.pid; wait",
        HELD.as_secs()
    ));
    p.timeout = Duration::from_millis(500);
    let start = Instant::now();
    let m = provider::command(&p, &args(), dir.path()).await;
    assert_eq!(
        inconclusive(&m),
        "command `/bin/sh`: no answer within 500ms; its process group was killed"
    );
    let took = start.elapsed();
    assert!(took >= p.timeout && took < HELD, "{took:?}");
    let pid = std::fs::read_to_string(dir.path().join("child.pid")).unwrap();
    let pid = pid.trim().to_owned();
    wait_for_async(Duration::from_secs(5), || {
        let pid = pid.clone();
        async move { gone(&pid) }
    })
    .await
    .unwrap_or_else(|e| panic!("the background sleep {pid} survived: {e}"));

    // A program that exits leaving a child behind holding its stdout is not
    // waited for: the group is killed when it exits.
    let script = format!("sleep {} & echo $! > left.pid; echo 0.75", HELD.as_secs());
    let start = Instant::now();
    let m = run(&script, dir.path()).await;
    assert_eq!(m, Measurement::Value(0.75));
    // Neither the sleep nor the provider's timeout was waited for.
    let took = start.elapsed();
    assert!(took < sh("").timeout.min(HELD), "{took:?}");
    let pid = std::fs::read_to_string(dir.path().join("left.pid")).unwrap();
    let pid = pid.trim().to_owned();
    wait_for_async(Duration::from_secs(5), || {
        let pid = pid.clone();
        async move { gone(&pid) }
    })
    .await
    .unwrap_or_else(|e| panic!("the left-behind sleep {pid} survived: {e}"));
}

// --- a real Prometheus ----------------------------------------------------

/// Asks `ask` until its answer is `done`, for at most 20 s (polling every
/// 100 ms): the last answer, `Err` when it never was.
async fn until<T, F, Fut>(mut ask: F, done: impl Fn(&T) -> bool) -> Result<T, T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = ask().await;
        if done(&answer) {
            return Ok(answer);
        }
        if Instant::now() >= deadline {
            return Err(answer);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A demo app serving on a loopback port until dropped.
struct Demo {
    addr: SocketAddr,
    _task: Task,
}

async fn demo(error_rate: f64, latency: Duration) -> Demo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = hatoba_demo_app::Config {
        error_rate,
        latency,
        ..hatoba_demo_app::Config::default()
    };
    let task = tokio::spawn(async move {
        let _ = hatoba_demo_app::serve(listener, cfg, std::future::pending()).await;
    });
    Demo {
        addr,
        _task: Task(task),
    }
}

/// Sends `GET /` to `addr` over one keep-alive connection, again and again,
/// pausing `pause` between requests, until dropped.
fn load(addr: SocketAddr, pause: Duration) -> Task {
    Task(tokio::spawn(async move {
        loop {
            let Ok(stream) = TcpStream::connect(addr).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let io = hyper_util::rt::TokioIo::new(stream);
            let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await else {
                continue;
            };
            let conn = tokio::spawn(conn);
            loop {
                let request = hyper::Request::get("/")
                    .header("host", addr.to_string())
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                let Ok(response) = sender.send_request(request).await else {
                    break;
                };
                let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                tokio::time::sleep(pause).await;
            }
            conn.abort();
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_prometheus_judges_two_demo_instances() {
    let good = demo(0.0, Duration::ZERO).await;
    let bad = demo(0.3, Duration::from_millis(60)).await;
    let _load = [
        load(good.addr, Duration::from_millis(5)),
        load(good.addr, Duration::from_millis(5)),
        load(bad.addr, Duration::from_millis(1)),
        load(bad.addr, Duration::from_millis(1)),
    ];
    let targets = [good.addr, bad.addr];
    let started = Instant::now();
    let found = tokio::task::spawn_blocking(move || TempPrometheus::start(&targets))
        .await
        .unwrap();
    let Some(prom_server) = external("Prometheus", found) else {
        return;
    };
    let ready_in = started.elapsed();
    let url = prom_server.url();
    let query = |q: &str, a: &Args| {
        let p = prom(&url, q);
        let a = a.clone();
        async move { provider::prometheus(&p, &a).await }
    };

    // Both targets scraped at least once.
    let scraped = until(
        || query(r#"sum(up{job="demo"})"#, &args()),
        |m| *m == Measurement::Value(2.0),
    )
    .await;
    if let Err(last) = scraped {
        panic!("never scraped both: {last:?}\n{}", prom_server.log());
    }
    let scraped_in = started.elapsed();

    // The seeds' success rate, per instance through a template argument.
    let success = r#"sum(rate(http_requests_total{job="demo",instance="{{instance}}",status=~"2.."}[30s]))
        / sum(rate(http_requests_total{job="demo",instance="{{instance}}"}[30s]))"#;
    let good_args = with_arg("instance", &good.addr.to_string());
    let bad_args = with_arg("instance", &bad.addr.to_string());
    let rates = until(
        || {
            let (g, b) = (query(success, &good_args), query(success, &bad_args));
            async move { (g.await, b.await) }
        },
        |rates| {
            matches!(rates, (Measurement::Value(g), Measurement::Value(b)) if *g > 0.99 && *b < 0.9)
        },
    )
    .await;
    let (good_rate, bad_rate) = match rates {
        Ok((Measurement::Value(g), Measurement::Value(b))) => (g, b),
        other => panic!("rates never settled: {other:?}\n{}", prom_server.log()),
    };
    assert!(good_rate > 0.99, "{good_rate}");
    assert!((0.5..0.9).contains(&bad_rate), "{bad_rate}");
    assert!(bad_rate < good_rate - 0.1);

    // The seeds' p95, per instance.
    let p95 = r#"histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket{instance="{{instance}}"}[30s])) by (le))"#;
    let good_p95 = query(p95, &good_args).await.value().unwrap();
    let bad_p95 = query(p95, &bad_args).await.value().unwrap();
    // Every bad answer takes over 60 ms: its p95 is past the 50 ms bucket
    // edge (about 97.5 ms when all fall in the 50-100 ms bucket).
    assert!(bad_p95 >= 0.05, "{bad_p95}");
    assert!(good_p95 < bad_p95 / 2.0, "good {good_p95}, bad {bad_p95}");

    // Fail-safe answers from the real thing.
    let m = query(r#"http_requests_total{job="nothing-here"}"#, &args()).await;
    assert!(
        inconclusive(&m).ends_with("no data: the query matched no series"),
        "{m:?}"
    );
    let m = query(r#"http_requests_total{job="demo"}"#, &args()).await;
    let why = inconclusive(&m);
    assert!(why.contains("the query matched 3 series"), "{why}");
    assert!(why.contains("http_requests_total{instance="), "{why}");
    let m = query("sum(rate(http_requests_total[30s])", &args()).await;
    let why = inconclusive(&m);
    assert!(
        why.contains("answered HTTP 400 with an error: bad_data:"),
        "{why}"
    );
    assert!(why.contains("parse error"), "{why}");
    let m = query("0/0", &args()).await;
    assert_eq!(
        inconclusive(&m),
        format!("prometheus at {}: value is NaN", prom_server.addr())
    );

    let took = started.elapsed();
    // Straight to the stderr handle: libtest would swallow `eprintln!`.
    let _ = writeln!(
        std::io::stderr(),
        "prometheus: ready in {ready_in:?}, both targets scraped in {scraped_in:?}, \
         test done in {took:?}"
    );
}
