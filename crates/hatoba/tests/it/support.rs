//! What the tests of `hatoba up` share: the CLI aimed at a state
//! directory, a server that is stopped when the test ends however it ends,
//! a sweep that ends every process of a state directory (data plane and
//! instances included) when the test ends however it ends, polling with a
//! deadline, and asking the proxy which version answers.

use std::path::Path;
use std::time::{Duration, Instant};

/// `hatoba --state-dir STATE`, with the user's environment out of the way.
pub(crate) fn hatoba(state: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_hatoba"));
    cmd.env_remove("HATOBA_OUTPUT")
        .env_remove("HATOBA_STORE")
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
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// Ends every process of a state directory ([`processes_of`]) with
/// SIGKILL, each one's process group too when it leads one (an instance's
/// children), and waits until they are gone. Run when a test ends, passed
/// or panicked: a data plane is started detached by `hatoba up` and
/// outlives it by design (and a `kill9`ed controller leaves its instances),
/// so nothing else would stop them.
pub(crate) fn sweep(state: &Path) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::{Pid, getpgid, getpgrp};
    let ours = getpgrp();
    let mut left = processes_of(state);
    for pid in &left {
        let pid = Pid::from_raw(*pid);
        if getpgid(Some(pid)).is_ok_and(|g| g == pid && g != ours) {
            let _ = killpg(pid, Signal::SIGKILL);
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left.retain(|pid| u32::try_from(*pid).is_ok_and(alive));
    }
    if !left.is_empty() && !std::thread::panicking() {
        panic!("still running 10 s after SIGKILL: {left:?}");
    }
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

    /// `hatoba deploy web --version V --set NAME=VALUE --wait`, which must
    /// end without success (exit 1) and print `says`.
    pub(crate) fn deploy_fails(&self, version: &str, set: &str, says: &str) {
        hatoba(&self.state)
            .args([
                "deploy",
                "web",
                "--version",
                version,
                "--set",
                set,
                "--wait",
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
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = u64::from(child.id());
        let up = Up(child);
        let info = state.join("server.json");
        poll(
            "server.json of the new server",
            Duration::from_secs(60),
            || {
                let t = std::fs::read_to_string(&info).ok()?;
                let v: serde_json::Value = serde_json::from_str(&t).ok()?;
                (v["pid"].as_u64() == Some(pid)).then_some(())
            },
        );
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
            let deadline = Instant::now() + STOP_GRACE;
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The version the proxy on `port` answers with (its `x-version`), or why
/// it does not answer 200.
pub(crate) fn served(port: u16) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if !out.starts_with("HTTP/1.1 200") {
        return Err(out.lines().next().unwrap_or("").to_owned());
    }
    out.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-version: ")
                .map(str::to_owned)
        })
        .ok_or(out)
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

/// Requests one after another on fresh connections until stopped (at most
/// two minutes), so analysis has traffic to judge.
pub(crate) struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    /// Starts sending to the proxy on `port`.
    pub(crate) fn start(port: u16) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            while !flag.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(120)
            {
                let _ = served(port);
                // Pacing, not waiting: about 200 requests a second.
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
