//! What the tests of `hatoba up` share: the CLI aimed at a state
//! directory, a server that is stopped when the test ends however it ends,
//! a sweep that ends every process of a state directory (data plane and
//! instances included) when the test ends however it ends, polling with a
//! deadline, and asking the proxy which version answers; [`Traffic`]
//! counts every answer of a load by kind (200s by version, a backend's own
//! 5xx, the proxy's 5xx, connections refused or cut), so a test asserts
//! that none failed.

use std::path::Path;
use std::time::{Duration, Instant};

/// `hatoba --state-dir STATE`, with the user's environment out of the way.
pub(crate) fn hatoba(state: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_hatoba"));
    cmd.env_remove("HATOBA_OUTPUT")
        .env_remove("HATOBA_STORE")
        .env_remove("HATOBA_SERVER")
        .env_remove("HATOBA_TOKEN")
        .env("NO_COLOR", "1")
        .arg("--state-dir")
        .arg(state);
    cmd.timeout(Duration::from_secs(120));
    cmd
}

/// Polls `f` until it gives a value, failing the test after `limit`.
pub(crate) fn poll<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_explained(what, limit, f, String::new)
}

/// [`poll`], adding `explain()` (e.g. `hatoba diagnose`) to the failure.
pub(crate) fn poll_explained<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", explain());
        }
        // The poll interval of a wait with a deadline.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The processes of a state directory, by pid: `hatoba up` and `hatoba
/// dataplane` (which name it after `--state-dir`) and the instances with
/// whatever they started (which carry it in `HATOBA_SCOPE`). Zombies are
/// left out: they are gone already, only not yet reaped.
pub(crate) fn processes_of(state: &Path) -> Vec<i32> {
    let given = state.as_os_str().as_encoded_bytes().to_vec();
    let absolute = std::path::absolute(state)
        .map(|p| p.into_os_string().into_encoded_bytes())
        .unwrap_or_else(|_| given.clone());
    let scope = [b"HATOBA_SCOPE=".as_slice(), &absolute].concat();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !alive(pid) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let names_state = args
            .windows(2)
            .any(|w| w[0] == b"--state-dir" && (w[1] == given || w[1] == absolute));
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let in_scope = environ.split(|b| *b == 0).any(|v| v == scope);
        if (names_state || in_scope)
            && let Ok(pid) = i32::try_from(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Whether `pid` runs (exists and is not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(hatoba_test_support::alive)
}

/// Ends every process of a state directory ([`processes_of`]) with
/// SIGKILL, each one's process group too when it leads one (an instance's
/// children), and waits until they are gone. Run when a test ends, passed
/// or panicked: a data plane is started detached by `hatoba up` and
/// outlives it by design (and a `kill9`ed controller leaves its instances),
/// so nothing else would stop them.
pub(crate) fn sweep(state: &Path) {
    let left = hatoba_test_support::kill_and_wait(processes_of(state), Duration::from_secs(10));
    if !left.is_empty() && !std::thread::panicking() {
        panic!("still running 10 s after SIGKILL: {left:?}");
    }
}

/// The pid of the `hatoba dataplane` process of a state directory.
pub(crate) fn data_plane_pid(state: &Path) -> Option<i32> {
    let state = std::path::absolute(state).ok()?.display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let text = String::from_utf8_lossy(&cmdline);
        (text.contains(&state) && text.split('\0').any(|a| a == "dataplane"))
            .then(|| e.file_name().to_str()?.parse().ok())?
    })
}

/// [`sweep`] when dropped.
pub(crate) struct Sweep(pub(crate) std::path::PathBuf);

impl Drop for Sweep {
    fn drop(&mut self) {
        sweep(&self.0);
    }
}

/// A child process of the test, killed (if it still runs) and reaped when
/// dropped, however the test ends.
pub(crate) struct Reaped(pub(crate) std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A test's own directory: a state directory, a free proxy port and a
/// spec file written for that port. Dropping it ends every process of the
/// state directory ([`sweep`]) before the directory goes.
pub(crate) struct Sandbox {
    _dir: tempfile::TempDir,
    pub(crate) state: std::path::PathBuf,
    pub(crate) port: u16,
    pub(crate) file: std::path::PathBuf,
}

impl Sandbox {
    /// Writes `spec(port)` as the spec file.
    pub(crate) fn new(spec: impl FnOnce(u16) -> String) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let port = hatoba_test_support::free_port().unwrap();
        let file = dir.path().join("hatoba.yaml");
        std::fs::write(&file, spec(port)).unwrap();
        Sandbox {
            state: dir.path().join("state"),
            port,
            file,
            _dir: dir,
        }
    }

    /// `hatoba up` on the spec, with extra arguments.
    pub(crate) fn up(&self, args: &[&str]) -> Up {
        Up::start(&self.state, &self.file, args)
    }

    /// `hatoba up` on the spec with these variables in its environment.
    pub(crate) fn up_with_env(&self, env: &[(&str, &str)]) -> Up {
        Up::start_with_env(&self.state, &self.file, &[], env)
    }

    /// `hatoba deploy web --version VERSION --wait`, which must succeed.
    pub(crate) fn deploy_ok(&self, version: &str) {
        hatoba(&self.state)
            .args(["deploy", "web", "--version", version, "--wait"])
            .assert()
            .success();
    }

    /// `hatoba deploy web --version V --set NAME=VALUE --wait=complete`,
    /// which must end without success (exit 1) and print `says` (a
    /// regression during a watch after promotion included).
    pub(crate) fn deploy_fails(&self, version: &str, set: &str, says: &str) {
        hatoba(&self.state)
            .args([
                "deploy",
                "web",
                "--version",
                version,
                "--set",
                set,
                "--wait=complete",
            ])
            .assert()
            .code(1)
            .stdout(predicates::str::contains(says));
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        sweep(&self.state);
    }
}

/// How long a `hatoba up` of a test may take to stop after SIGTERM before
/// it gets SIGKILL (its own shutdown waits up to 60 s for rollouts).
const STOP_GRACE: Duration = Duration::from_secs(90);

/// A `hatoba up` of the test. Dropping it sends SIGTERM (so it stops its
/// instances and its data plane too) and waits, at most [`STOP_GRACE`].
pub(crate) struct Up(pub(crate) std::process::Child);

impl Up {
    /// Starts `hatoba up -f FILE ARGS...` and waits until this very server
    /// has written its `server.json`.
    pub(crate) fn start(state: &Path, file: &Path, args: &[&str]) -> Up {
        Up::start_with_env(state, file, args, &[])
    }

    /// [`Up::start`] with extra variables in its environment.
    pub(crate) fn start_with_env(
        state: &Path,
        file: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Up {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
            .arg("--state-dir")
            .arg(state)
            .arg("up")
            .args(args)
            .arg("-f")
            .arg(file)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = u64::from(child.id());
        let mut up = Up(child);
        // Its log, read as it comes (a pipe left unread would block it),
        // to say why when it never serves.
        let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(mut err) = up.0.stderr.take() {
            let said = std::sync::Arc::clone(&said);
            std::thread::spawn(move || {
                use std::io::Read as _;
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut s = said.lock().unwrap();
                    if s.len() < 64 << 10 {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        let info = state.join("server.json");
        let mut exited = None;
        poll_explained(
            "server.json of the new server",
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = up.0.try_wait() {
                    exited = Some(status);
                    return Some(());
                }
                let t = std::fs::read_to_string(&info).ok()?;
                let v: serde_json::Value = serde_json::from_str(&t).ok()?;
                (v["pid"].as_u64() == Some(pid)).then_some(())
            },
            || format!("its log:\n{}", said.lock().unwrap()),
        );
        if let Some(status) = exited {
            // Its last words come with its end; the reader gets them at EOF.
            poll("the end of its log", Duration::from_secs(5), || {
                (std::sync::Arc::strong_count(&said) == 1).then_some(())
            });
            panic!(
                "hatoba up exited ({status}) before serving; its log:\n{}",
                said.lock().unwrap()
            );
        }
        up
    }

    /// Kills it with SIGKILL: nothing of its own shutdown runs.
    pub(crate) fn kill9(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Stops it with SIGTERM, as systemd does, and waits: true when it
    /// exited 0.
    pub(crate) fn terminate(mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.0.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let (Ok(None), Ok(pid)) = (self.0.try_wait(), i32::try_from(self.0.id())) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = hatoba_test_support::wait_for(STOP_GRACE, || {
                !matches!(self.0.try_wait(), Ok(None))
            });
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The version the proxy on `port` answers with (its `x-version`), or why
/// it does not answer 200.
pub(crate) fn served(port: u16) -> Result<String, String> {
    match ask(port) {
        Answer::Ok(version) => Ok(version),
        other => Err(other.to_string()),
    }
}

/// What one `GET /` through the proxy got, sorted by whose fault a
/// failure is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 200 from this version (its `x-version`).
    Ok(String),
    /// A 5xx a backend answered itself (it carries the backend's
    /// `x-version`): the version's fault, e.g. the demo app's
    /// `DEMO_ERROR_RATE`, not a failed rollout.
    App { version: String, status: String },
    /// A 5xx the proxy made (502/503/504 with its JSON error): no backend
    /// to send to, the backend failed, a timeout.
    Proxy { status: String, body: String },
    /// Connecting was refused: nothing listens on the address.
    Refused(String),
    /// Connected, then no whole answer: reset, closed early, timed out.
    Cut(String),
    /// An answer that is none of the above (a 200 without `x-version`, a
    /// 4xx, a 5xx that is neither the proxy's nor a backend's).
    Unexplained(String),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Ok(v) => write!(f, "200 from {v}"),
            Answer::App { version, status } => write!(f, "{status} from the app, {version}"),
            Answer::Proxy { status, body } => write!(f, "{status} from the proxy: {body}"),
            Answer::Refused(e) => write!(f, "refused: {e}"),
            Answer::Cut(e) => write!(f, "cut: {e}"),
            Answer::Unexplained(a) => write!(f, "unexplained answer: {a}"),
        }
    }
}

/// One `GET /` on a fresh connection to the proxy on `port` (at most 10 s
/// to answer), sorted.
pub(crate) fn ask(port: u16) -> Answer {
    use std::io::{Read, Write};
    let mut s = match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Answer::Refused(e.to_string());
        }
        Err(e) => return Answer::Cut(format!("connecting: {e}")),
    };
    let mut out = Vec::new();
    let sent = s
        .set_read_timeout(Some(Duration::from_secs(10)))
        .and_then(|()| s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        .and_then(|()| s.read_to_end(&mut out));
    let text = String::from_utf8_lossy(&out).into_owned();
    match sent {
        Err(e) => Answer::Cut(format!("{e} after {} bytes", out.len())),
        Ok(0) => Answer::Cut("closed without an answer".to_owned()),
        Ok(_) => sort(&text),
    }
}

/// Sorts a whole HTTP/1.1 answer.
fn sort(text: &str) -> Answer {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let status = status_line.split(' ').nth(1).unwrap_or("").to_owned();
    let version = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-version")
            .then(|| value.trim().to_owned())
    });
    let proxy_error = serde_json::from_str::<serde_json::Value>(body)
        .is_ok_and(|v| v["error"].is_string() && v["request_id"].is_string());
    match (status.as_str(), version) {
        ("200", Some(version)) => Answer::Ok(version),
        (s, Some(version)) if s.starts_with('5') => Answer::App { version, status },
        ("502" | "503" | "504", None) if proxy_error => Answer::Proxy {
            status,
            body: body.trim().to_owned(),
        },
        _ => Answer::Unexplained(format!("{status_line} {}", body.trim())),
    }
}

/// The newest deployment in the history, as JSON (`Null` when none).
pub(crate) fn latest(state: &Path) -> serde_json::Value {
    let out = hatoba(state)
        .args(["history", "-o", "json", "--limit", "1"])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .map(|v| v["deployments"][0].clone())
        .unwrap_or(serde_json::Value::Null)
}

/// How many first failures a [`Summary`] keeps to show.
const SHOWN: usize = 10;

/// Every answer of a [`Traffic`], counted by kind.
#[derive(Clone, Debug, Default)]
pub(crate) struct Summary {
    /// 200s, by version.
    pub(crate) ok: std::collections::BTreeMap<String, u64>,
    /// A backend's own 5xx, by version: the version's fault.
    pub(crate) app_errors: std::collections::BTreeMap<String, u64>,
    /// The proxy's own 5xx.
    pub(crate) proxy_errors: u64,
    /// Connections refused.
    pub(crate) refused: u64,
    /// Connections cut before a whole answer.
    pub(crate) cut: u64,
    /// Answers of no known kind.
    pub(crate) unexplained: u64,
    /// The first failures (not the app's own 5xx), with when they came.
    pub(crate) first_failures: Vec<String>,
}

impl Summary {
    fn count(&mut self, at: Duration, answer: Answer) {
        let failed = match &answer {
            Answer::Ok(v) => {
                *self.ok.entry(v.clone()).or_default() += 1;
                false
            }
            Answer::App { version, .. } => {
                *self.app_errors.entry(version.clone()).or_default() += 1;
                false
            }
            Answer::Proxy { .. } => {
                self.proxy_errors += 1;
                true
            }
            Answer::Refused(_) => {
                self.refused += 1;
                true
            }
            Answer::Cut(_) => {
                self.cut += 1;
                true
            }
            Answer::Unexplained(_) => {
                self.unexplained += 1;
                true
            }
        };
        if failed && self.first_failures.len() < SHOWN {
            self.first_failures
                .push(format!("at {:.3}s: {answer}", at.as_secs_f64()));
        }
    }

    /// Every 200, whichever version.
    pub(crate) fn ok_total(&self) -> u64 {
        self.ok.values().sum()
    }

    /// Requests that failed for the proxy's or the connection's sake (not
    /// a backend's own 5xx).
    pub(crate) fn failed(&self) -> u64 {
        self.proxy_errors + self.refused + self.cut + self.unexplained
    }

    /// Not one request failed: no connection refused or cut, no 5xx of the
    /// proxy, nothing unexplained; a backend's own 5xx (`ERROR_RATE`) is
    /// the version's fault and allowed. Also fails when fewer than `least`
    /// requests were answered at all, so a count of nothing passes nothing.
    #[track_caller]
    pub(crate) fn assert_no_failed(&self, least: u64) {
        assert!(
            self.failed() == 0 && self.answered() >= least,
            "expected no failed request and at least {least} answered; {self}"
        );
    }

    /// Nothing that reached the proxy failed (no 5xx of its own, no
    /// connection cut, nothing unexplained); refused connections are
    /// allowed, as once a stopped proxy has closed its listener.
    #[track_caller]
    pub(crate) fn assert_none_cut(&self, least: u64) {
        assert!(
            self.failed() == self.refused && self.answered() >= least,
            "expected no request cut or failed by the proxy and at least {least} answered; {self}"
        );
    }

    /// Nothing was refused and the proxy failed nothing of its own; a
    /// request in flight may be cut, as when the data plane is killed
    /// (invariant 17: its kept sockets keep connecting, what it was
    /// serving dies with it).
    #[track_caller]
    pub(crate) fn assert_none_refused(&self, least: u64) {
        assert!(
            self.refused == 0
                && self.proxy_errors + self.unexplained == 0
                && self.answered() >= least,
            "expected no connection refused, no proxy error and at least {least} answered; {self}"
        );
    }

    /// Requests that got an answer from a backend (200 or its own 5xx).
    pub(crate) fn answered(&self) -> u64 {
        self.ok_total() + self.app_errors.values().sum::<u64>()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "200 by version {:?}, the app's own 5xx by version {:?}; failed: {} 5xx of the proxy, \
             {} refused, {} cut, {} unexplained",
            self.ok, self.app_errors, self.proxy_errors, self.refused, self.cut, self.unexplained
        )?;
        for line in &self.first_failures {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// Clients sending `GET /` one after another on fresh connections (each a
/// new choice of backend), every answer counted, until stopped: at most
/// five minutes and 60,000 requests each.
pub(crate) struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    counts: std::sync::Arc<std::sync::Mutex<Summary>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    /// One client sending to the proxy on `port`, about 200 requests a
    /// second.
    pub(crate) fn start(port: u16) -> Traffic {
        Traffic::clients(port, 1)
    }

    /// `n` clients at once.
    pub(crate) fn clients(port: u16, n: usize) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let counts = std::sync::Arc::new(std::sync::Mutex::new(Summary::default()));
        let started = Instant::now();
        let threads = (0..n)
            .map(|_| {
                let stop = std::sync::Arc::clone(&stop);
                let counts = std::sync::Arc::clone(&counts);
                std::thread::spawn(move || {
                    for _ in 0..60_000 {
                        if stop.load(std::sync::atomic::Ordering::Relaxed)
                            || started.elapsed() > Duration::from_secs(300)
                        {
                            break;
                        }
                        let answer = ask(port);
                        counts
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .count(started.elapsed(), answer);
                        // Not a wait: the pause between requests is what
                        // sets this load's rate (about 200 a second per client).
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            counts,
            threads,
        }
    }

    /// The counts so far.
    pub(crate) fn so_far(&self) -> Summary {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `n` requests got an answer from a backend
    /// (at most 30 s), so a count covers the time after this.
    pub(crate) fn wait_answered(&self, n: u64) {
        poll_explained(
            &format!("{n} answered requests"),
            Duration::from_secs(30),
            || (self.so_far().answered() >= n).then_some(()),
            || self.so_far().to_string(),
        );
    }

    /// Stops the clients and returns every answer counted.
    pub(crate) fn finish(mut self) -> Summary {
        self.halt();
        self.so_far()
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The sorting [`Traffic`] counts by: a backend's 5xx carries its
/// `x-version`, the proxy's is its JSON error, and anything else that is
/// not a 200 of a version is a failure nobody explained.
#[test]
fn answers_are_sorted_by_whose_fault_a_failure_is() {
    let proxy =
        r#"{"error":"no_backend","message":"no ready instance of `web`","request_id":"r1"}"#;
    let cases = [
        (
            "HTTP/1.1 200 OK\r\nX-Version: v1\r\n\r\nhello",
            Answer::Ok("v1".into()),
        ),
        (
            "HTTP/1.1 500 Internal Server Error\r\nx-version: v3\r\n\r\ninjected error",
            Answer::App {
                version: "v3".into(),
                status: "500".into(),
            },
        ),
        (
            &format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\r\n{proxy}"
            ),
            Answer::Proxy {
                status: "503".into(),
                body: proxy.into(),
            },
        ),
        (
            "HTTP/1.1 502 Bad Gateway\r\n\r\n<html>bad gateway</html>",
            Answer::Unexplained("HTTP/1.1 502 Bad Gateway <html>bad gateway</html>".into()),
        ),
        (
            "HTTP/1.1 404 Not Found\r\nx-version: v1\r\n\r\nnot found",
            Answer::Unexplained("HTTP/1.1 404 Not Found not found".into()),
        ),
        (
            "HTTP/1.1 200 OK\r\n\r\nno version",
            Answer::Unexplained("HTTP/1.1 200 OK no version".into()),
        ),
    ];
    for (text, want) in &cases {
        assert_eq!(sort(text), *want, "{text}");
    }
    let mut s = Summary::default();
    for (text, _) in cases.iter().cycle().take(7) {
        s.count(Duration::ZERO, sort(text));
    }
    assert_eq!((s.ok_total(), s.failed(), s.answered()), (2, 4, 3), "{s}");
}

/// The one-service spec the canary tests share: `web` is this binary as the
/// demo app (`${ERROR_RATE}` sets its error rate), `replicas` of it on
/// `port`, readiness on `/ready` every 100 ms, updated by a canary whose
/// body (`steps:` and the rest, indented for the `canary:` key) and
/// analysis templates (indented for `templates:`) are the test's own.
pub(crate) struct CanaryWeb<'a> {
    pub(crate) app: &'a str,
    pub(crate) replicas: u32,
    pub(crate) progress_deadline: &'a str,
    pub(crate) drain: &'a str,
    pub(crate) canary: &'a str,
    pub(crate) templates: &'a str,
}

impl CanaryWeb<'_> {
    /// The spec's text, listening on `port`.
    pub(crate) fn spec(&self, port: u16) -> String {
        format!(
            r#"app: {app}
services:
  web:
    process:
      command: {exe}
      args: ["demo-app", "--version-label", "${{VERSION}}"]
      env: {{DEMO_ERROR_RATE: "${{ERROR_RATE:-0}}"}}
    replicas: {replicas}
    route: {{listen: "127.0.0.1:{port}"}}
    health:
      readiness: {{path: /ready, period: 100ms}}
    progressDeadline: {deadline}
    drain: {drain}
    strategy:
      canary:
{canary}
analysis:
  templates:
{templates}
"#,
            app = self.app,
            exe = env!("CARGO_BIN_EXE_hatoba"),
            replicas = self.replicas,
            deadline = self.progress_deadline,
            drain = self.drain,
            canary = self.canary.trim_end(),
            templates = self.templates.trim_end(),
        )
    }
}

/// `GET path` on the server's API with its token, the raw answer.
pub(crate) fn api_get(state: &Path, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("server.json")).unwrap()).unwrap();
    let token = std::fs::read_to_string(state.join("token")).unwrap();
    let mut s = std::net::TcpStream::connect(info["api"].as_str().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token.trim()
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "GET {path}: {}",
        String::from_utf8_lossy(&out)
    );
    out
}

/// What `hatoba logs web -f` printed across a kill -9 and a restart of
/// `hatoba up` (`up`; `restart` starts it again and it adopts the running
/// instance): a line the instance writes (`write`) before, while the
/// server is away and after, each printed once with the tail's `listening
/// on`; "lost the server" said once and "the server is back" said; still
/// following at the end. Gives the new server, and stdout and stderr.
pub(crate) fn logs_follow_across_a_restart(
    state: &Path,
    up: Up,
    write: &dyn Fn(&str),
    restart: &dyn Fn() -> Up,
) -> (Up, String, String) {
    use std::sync::{Arc, Mutex};
    let follow = std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .arg("--state-dir")
        .arg(state)
        .args(["logs", "web", "-f", "-n", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut follow = Reaped(follow);
    // What it printed so far, on stdout and on stderr, read as it comes.
    let read = |from: Box<dyn std::io::Read + Send>| {
        let seen = Arc::new(Mutex::new(String::new()));
        let into = Arc::clone(&seen);
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
                let mut s = into.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        seen
    };
    let out = read(Box::new(follow.0.stdout.take().unwrap()));
    let err = read(Box::new(follow.0.stderr.take().unwrap()));
    let both = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            out.lock().unwrap(),
            err.lock().unwrap()
        )
    };
    let has = |seen: &Mutex<String>, what: &str| seen.lock().unwrap().contains(what);
    write("a line written before the restart");
    poll_explained(
        "logs -f to print the line written before the restart",
        Duration::from_secs(20),
        || has(&out, "] a line written before the restart").then_some(()),
        both,
    );
    up.kill9();
    poll_explained(
        "logs -f to say it lost the server",
        Duration::from_secs(20),
        || has(&err, "lost the server").then_some(()),
        both,
    );
    write("a line written while the server was away");
    let up = restart();
    write("a line written after the restart");
    poll_explained(
        "logs -f to follow on",
        Duration::from_secs(30),
        || {
            (has(&err, "(the server is back: following on)")
                && has(&out, "] a line written while the server was away")
                && has(&out, "] a line written after the restart"))
            .then_some(())
        },
        both,
    );
    assert!(
        matches!(follow.0.try_wait(), Ok(None)),
        "logs -f still follows\n{}",
        both()
    );
    let (o, e) = (out.lock().unwrap().clone(), err.lock().unwrap().clone());
    for line in [
        "demo app v1 listening on",
        "a line written before the restart",
        "a line written while the server was away",
        "a line written after the restart",
    ] {
        assert_eq!(o.matches(line).count(), 1, "`{line}` once in:\n{}", both());
    }
    assert_eq!(e.matches("lost the server").count(), 1, "{}", both());
    (up, o, e)
}
