//! A throw-away Prometheus for tests: Debian's `prometheus` binary, a
//! generated config scraping the given targets every second (job `demo`),
//! a temporary TSDB directory, a free loopback port; killed on drop.
//!
//! Each [`TempPrometheus`] is its own server (they start in well under a
//! second). A watchdog process kills it and removes its directory if the
//! test binary dies without dropping it (SIGKILL, Ctrl-C), so no
//! `prometheus` outlives the tests. Prometheus runs fine as root; it is
//! started as whoever runs the tests.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::watchdog::Watchdog;
use crate::{external, free_port, wait_for};

/// How long the server may take to answer `/-/ready`.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Attempts at starting the server when its port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
/// Where Debian puts the binary.
const DEBIAN_BINARY: &str = "/usr/bin/prometheus";

/// Why no Prometheus could be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PrometheusUnavailable {
    /// What went wrong, with the tail of the server's log where there is one.
    pub reason: String,
}

fn unavailable(reason: impl Into<String>) -> PrometheusUnavailable {
    PrometheusUnavailable {
        reason: reason.into(),
    }
}

/// A Prometheus for the calling test, scraping `targets` every second:
/// `Some` when one could be started; otherwise `SKIP`s (or fails under
/// `HATOBA_REQUIRE_EXTERNAL=1`, see [`external`]). Call it on the test's
/// own thread (the skip line names the thread); from async code, run
/// [`TempPrometheus::start`] on a blocking thread and hand its result to
/// [`external`].
pub fn prometheus(targets: &[SocketAddr]) -> Option<TempPrometheus> {
    external("Prometheus", TempPrometheus::start(targets))
}

/// A running Prometheus on 127.0.0.1, killed (and its directory removed)
/// when dropped.
#[derive(Debug)]
pub struct TempPrometheus {
    addr: SocketAddr,
    server: Child,
    /// Kills the server if this process dies.
    watchdog: Watchdog,
    /// Removed on drop, after the server has stopped.
    dir: tempfile::TempDir,
}

impl TempPrometheus {
    /// Starts a server that scrapes `targets` (`/metrics`, job `demo`,
    /// every 1 s) and waits until it answers `/-/ready`.
    pub fn start(targets: &[SocketAddr]) -> Result<TempPrometheus, PrometheusUnavailable> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("hatoba-prometheus-")
            .tempdir()
            .map_err(|e| unavailable(format!("cannot make a temporary directory: {e}")))?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_text(targets))
            .map_err(|e| unavailable(format!("cannot write the config: {e}")))?;

        let mut last_failure = String::new();
        for attempt in 0..PORT_ATTEMPTS {
            let port = free_port().map_err(|e| unavailable(format!("no free port: {e}")))?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let log_path = dir.path().join(format!("prometheus-{attempt}.log"));
            let log = File::create(&log_path)
                .map_err(|e| unavailable(format!("cannot create the server log: {e}")))?;
            let log_err = log
                .try_clone()
                .map_err(|e| unavailable(format!("cannot share the server log: {e}")))?;
            let mut server = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join(format!("data-{attempt}")).display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| unavailable(format!("cannot start {}: {e}", binary.display())))?;

            let mut exited = false;
            let ready = wait_for(START_DEADLINE, || {
                if matches!(server.try_wait(), Ok(Some(_))) {
                    exited = true;
                    return true;
                }
                answers_ready(addr)
            });
            let log_text = read_lossy(&log_path);
            if ready.is_err() {
                let _ = server.kill();
                let _ = server.wait();
                return Err(unavailable(format!(
                    "prometheus was not ready within {START_DEADLINE:?}: {}",
                    tail(&log_text)
                )));
            }
            if exited {
                if log_text.contains("address already in use") {
                    last_failure = tail(&log_text);
                    continue; // someone took the port meanwhile
                }
                return Err(unavailable(format!(
                    "prometheus exited: {}",
                    tail(&log_text)
                )));
            }
            let watchdog = match Watchdog::spawn(
                "hatoba-prometheus-watchdog",
                server.id(),
                "KILL",
                100,
                dir.path(),
            ) {
                Ok(w) => w,
                Err(e) => {
                    let _ = server.kill();
                    let _ = server.wait();
                    return Err(unavailable(format!("cannot start the watchdog: {e}")));
                }
            };
            return Ok(TempPrometheus {
                addr,
                server,
                watchdog,
                dir,
            });
        }
        Err(unavailable(format!(
            "prometheus found no free port in {PORT_ATTEMPTS} attempts: {last_failure}"
        )))
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the address a provider is given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's log so far (warnings and errors only), for a failing
    /// test's message.
    pub fn log(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            let mut logs: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            for log in logs {
                out.push_str(&read_lossy(&log));
            }
        }
        out
    }
}

impl Drop for TempPrometheus {
    fn drop(&mut self) {
        self.watchdog.disarm();
        // Its data is thrown away: no need for a graceful shutdown.
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// The scrape config: every target under job `demo`, every second.
fn config_text(targets: &[SocketAddr]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: demo\n    metrics_path: /metrics\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    )
}

fn find_binary() -> Result<PathBuf, PrometheusUnavailable> {
    let debian = PathBuf::from(DEBIAN_BINARY);
    if debian.is_file() {
        return Ok(debian);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            unavailable(format!(
                "no `prometheus` at {DEBIAN_BINARY} or on PATH (install Debian's `prometheus` package)"
            ))
        })
}

/// Whether `GET /-/ready` answers 200.
fn answers_ready(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /-/ready HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last few lines of a log, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_scrapes_every_target_every_second() {
        let text = config_text(&[
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ]);
        assert!(text.contains("scrape_interval: 1s"), "{text}");
        assert!(text.contains("job_name: demo"), "{text}");
        assert!(
            text.contains("targets: ['127.0.0.1:1', '127.0.0.1:2']"),
            "{text}"
        );
    }
}
