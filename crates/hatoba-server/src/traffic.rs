//! Generated traffic for quiet services: while an analysis whose template
//! says `traffic: {generate: {path, rate}}` runs, the controller sends
//! `GET path` through the service's own proxy listener, `rate` requests a
//! second pinned to each version (`X-Hatoba-Route: canary`, then
//! `stable`), so the proxy's per-version windows fill and the canary is
//! judged even when no user sends anything (no promotion without
//! evidence). The requests are ordinary proxied requests: they count in
//! the versions' metrics like any other.
//!
//! The generator is a task owned by the deployment's run: it stops when
//! the analyses that asked for it stop, and when the run ends (dropped).
//! At most [`MAX_IN_FLIGHT`] requests are in flight; each is bounded by
//! [`REQUEST_TIMEOUT`].

use hatoba_spec::{GenerateTraffic, Spec};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Requests in flight at most; past it a tick is skipped.
const MAX_IN_FLIGHT: usize = 64;

/// How long one generated request may take, connect to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Most of an answer read before the connection is dropped.
const MAX_ANSWER: usize = 64 * 1024;

/// What to generate: the strongest ask among the running analyses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Want {
    pub(crate) path: String,
    pub(crate) rate: u32,
}

/// The generation the templates of the running analyses ask for: the
/// highest rate, with its path; `None` when none asks.
pub(crate) fn wanted<'a>(
    spec: &Spec,
    templates: impl IntoIterator<Item = &'a String>,
) -> Option<Want> {
    templates
        .into_iter()
        .filter_map(|t| spec.analysis.templates.get(t))
        .filter_map(|t| t.traffic.as_ref()?.generate.as_ref())
        .max_by_key(|g| g.rate)
        .map(|g: &GenerateTraffic| Want {
            path: g.path.clone(),
            rate: g.rate,
        })
}

/// A running generator; dropping it stops it.
#[derive(Debug)]
pub(crate) struct Generator {
    pub(crate) want: Want,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a listener is reached from this host: a wildcard address means
/// loopback.
fn reach(host: &str) -> String {
    match host {
        "0.0.0.0" | "" => "127.0.0.1".to_owned(),
        "::" | "[::]" => "::1".to_owned(),
        h => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
    }
}

/// Starts sending `want` to the listener at `host:port`.
pub(crate) fn start(host: &str, port: u16, want: Want) -> Generator {
    let host = reach(host);
    let rate = want.rate.max(1);
    let path = want.path.clone();
    let task = tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            for role in ["canary", "stable"] {
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    continue;
                };
                let (host, path) = (host.clone(), path.clone());
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(REQUEST_TIMEOUT, send(&host, port, &path, role)).await;
                    drop(permit);
                });
            }
        }
    });
    Generator { want, task }
}

/// One `GET path` pinned to `role`, its answer read and dropped.
async fn send(host: &str, port: u16, path: &str, role: &str) -> std::io::Result<()> {
    let mut conn = tokio::net::TcpStream::connect((host, port)).await?;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hatoba-traffic\r\nX-Hatoba-Route: {role}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await?;
    let mut buf = vec![0u8; 8192];
    let mut read = 0;
    while read < MAX_ANSWER {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        assert_eq!(reach("0.0.0.0"), "127.0.0.1");
        assert_eq!(reach("::"), "::1");
        assert_eq!(reach("[::1]"), "::1");
        assert_eq!(reach("localhost"), "localhost");
    }
}
