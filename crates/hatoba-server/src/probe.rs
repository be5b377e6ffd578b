//! Readiness probes: an HTTP GET on each instance's probe path; 2xx and 3xx
//! pass. Consecutive successes and failures are counted per instance as
//! the spec's thresholds say.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One probe: true when the instance answered 2xx or 3xx within `timeout`.
pub(crate) async fn http_probe(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: hatoba-probe\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        let code = std::str::from_utf8(&head[9..12])
            .ok()?
            .parse::<u16>()
            .ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Per-instance streaks, turned into ready / not ready by thresholds.
#[derive(Default)]
pub(crate) struct Readiness {
    streaks: HashMap<SocketAddr, (u32, u32, bool)>,
}

impl Readiness {
    /// Records one probe result; returns whether the instance is ready now.
    pub(crate) fn observe(
        &mut self,
        addr: SocketAddr,
        passed: bool,
        success_threshold: u32,
        failure_threshold: u32,
    ) -> bool {
        let (ok, bad, ready) = self.streaks.entry(addr).or_insert((0, 0, false));
        if passed {
            *ok += 1;
            *bad = 0;
            if *ok >= success_threshold {
                *ready = true;
            }
        } else {
            *bad += 1;
            *ok = 0;
            if *bad >= failure_threshold {
                *ready = false;
            }
        }
        *ready
    }

    /// Starts an instance as ready (it was, before the controller restarted),
    /// so one slow probe does not take it out of the table.
    pub(crate) fn assume_ready(&mut self, addr: SocketAddr) {
        self.streaks.insert(addr, (0, 0, true));
    }

    /// Whether the instance has been seen.
    pub(crate) fn knows(&self, addr: SocketAddr) -> bool {
        self.streaks.contains_key(&addr)
    }

    pub(crate) fn forget(&mut self, addr: SocketAddr) {
        self.streaks.remove(&addr);
    }
}
