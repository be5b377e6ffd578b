//! Readiness and liveness probes: an HTTP GET on each instance's probe
//! path; 2xx and 3xx pass (or, without a readiness path, the port
//! accepts). Says why a probe failed. Also the IO side's translations for
//! the health policy (`hatoba_rollout::health`) that the supervisor and the
//! deployer both drive: its plan from the spec, what the runtime listed,
//! a probe as the policy asks and its result. Counting streaks and
//! deciding restarts is the policy's, never this module's.

use hatoba_rollout::health::{self, Check, HealthPlan, ProbePlan, ProbeResult, RestartPolicy};
use hatoba_runtime::{InstanceState, InstanceStatus};
use hatoba_spec::Service;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a probe did not pass, in words for an event or `hatoba diagnose`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProbeFailure {
    /// Nothing listens on the port (yet, or any more).
    #[error("connection refused")]
    Refused,
    /// Connecting, sending or reading failed otherwise.
    #[error("{0}")]
    Io(String),
    /// An answer, but not 2xx or 3xx.
    #[error("answered {0}")]
    Status(u16),
    /// Bytes that do not start an HTTP/1 status line.
    #[error("answered something that is not HTTP")]
    NotHttp,
    /// No status line within the probe's timeout.
    #[error("no answer within {}", hatoba_core::format_duration(*.0))]
    Timeout(Duration),
    /// The controller itself could not probe (out of file descriptors,
    /// memory or local ports): says nothing about the instance, so it is
    /// never counted against it.
    #[error("not probed: the controller is short of resources ({0})")]
    Controller(String),
}

/// Whether an error is the controller's own shortage rather than the
/// instance's doing: EMFILE, ENFILE, ENOMEM, ENOBUFS, EADDRNOTAVAIL (no
/// local port left), EAGAIN (no process could be forked).
pub(crate) fn is_controller_shortage(e: &std::io::Error) -> bool {
    const EAGAIN: i32 = 11;
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const EADDRNOTAVAIL: i32 = 99;
    const ENOBUFS: i32 = 105;
    matches!(
        e.raw_os_error(),
        Some(EAGAIN | ENOMEM | ENFILE | EMFILE | EADDRNOTAVAIL | ENOBUFS)
    ) || e.kind() == std::io::ErrorKind::OutOfMemory
}

/// [`is_controller_shortage`] anywhere in an error's chain (a runtime's
/// "cannot start" wraps the OS error).
pub(crate) fn is_controller_shortage_in(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && is_controller_shortage(io)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// What an IO error says about a probe.
fn io_failure(e: std::io::Error) -> ProbeFailure {
    if is_controller_shortage(&e) {
        return ProbeFailure::Controller(e.to_string());
    }
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => ProbeFailure::Refused,
        std::io::ErrorKind::UnexpectedEof => {
            ProbeFailure::Io("connection closed before a status line".to_owned())
        }
        _ => ProbeFailure::Io(e.to_string()),
    }
}

/// One probe: passes when the instance answers 2xx or 3xx within `timeout`.
pub(crate) async fn http_probe(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    http_call(addr, "GET", path, timeout).await
}

/// `drain.notify: {path}`: tells an instance it left the route and drains
/// (`POST path`, empty body); passes like a probe.
pub(crate) async fn notify_drain(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    http_call(addr, "POST", path, timeout).await
}

/// The most of a probe's answer read after its status line, to close the
/// connection cleanly once the app has sent it all.
const DRAIN_BYTES: usize = 64 * 1024;
/// How long a probe waits for the rest of an answer whose status it has.
const DRAIN_TIME: Duration = Duration::from_millis(200);

/// One request with an empty body; passes on 2xx or 3xx within `timeout`.
async fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    let io = io_failure;
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
        let length = if method == "GET" {
            ""
        } else {
            "Content-Length: 0\r\n"
        };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: hatoba-probe\r\n{length}\r\n"
        );
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.map_err(io)?;
        Ok((status_of(&head)?, s))
    };
    let answer = tokio::time::timeout(timeout, attempt).await;
    let answer = match answer {
        Ok(Ok((code, mut s))) => {
            // Read the rest of the answer (it ends with the connection, as
            // asked) before closing: a socket closed with bytes unread
            // sends a reset, and an app still writing its body gets
            // ECONNRESET, which many log as an error (Python's http.server
            // prints a traceback per probe). Bounded in bytes and time; the
            // verdict is already known and does not depend on it.
            let drain = async {
                let mut buf = [0u8; 4096];
                let mut left = DRAIN_BYTES;
                while left > 0 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            Ok(Ok(code))
        }
        Ok(Err(e)) => Ok(Err(e)),
        Err(e) => Err(e),
    };
    match answer {
        Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
        Ok(Ok(code)) => Err(ProbeFailure::Status(code)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProbeFailure::Timeout(timeout)),
    }
}

/// A probe for services without a readiness path: the port accepts.
pub(crate) async fn tcp_probe(addr: SocketAddr) -> Result<(), ProbeFailure> {
    match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => Ok(()),
        Err(e) => Err(io_failure(e)),
    }
}

/// The status code of `HTTP/1.x NNN`.
fn status_of(head: &[u8; 12]) -> Result<u16, ProbeFailure> {
    if !head.starts_with(b"HTTP/1.") || head[8] != b' ' {
        return Err(ProbeFailure::NotHttp);
    }
    std::str::from_utf8(&head[9..12])
        .ok()
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u16>().ok())
        .ok_or(ProbeFailure::NotHttp)
}

/// A probe's result as the health policy (`hatoba_rollout::health`) reads
/// it: a probe the controller could not make for its own shortage is no
/// observation of the instance.
pub(crate) fn policy_result(result: &Result<(), ProbeFailure>) -> ProbeResult {
    match result {
        Ok(()) => ProbeResult::Pass,
        Err(ProbeFailure::Controller(_)) => ProbeResult::NotMade,
        Err(why) => ProbeResult::Fail {
            why: why.to_string(),
            refused: *why == ProbeFailure::Refused,
        },
    }
}

/// The policy's parameters for a service: its probes' thresholds, restarts
/// as `restarts` says.
pub(crate) fn health_plan(svc: &Service, restarts: RestartPolicy) -> HealthPlan {
    let plan = |p: &hatoba_spec::Probe| ProbePlan {
        initial_delay: p.initial_delay,
        period: p.period,
        success_threshold: p.success_threshold,
        failure_threshold: p.failure_threshold,
    };
    HealthPlan {
        readiness: svc.health.readiness.as_ref().map(plan),
        liveness: svc.health.liveness.as_ref().map(plan),
        restarts,
    }
}

/// What the runtime listed, as the health policy reads it: an exit with a
/// code or a signal (or by the OOM killer) says so, any other end "is
/// gone".
pub(crate) fn listed_for_health(listed: &[InstanceStatus]) -> Vec<health::Listed> {
    listed
        .iter()
        .map(|l| health::Listed {
            id: l.id.0.clone(),
            exited: match &l.state {
                InstanceState::Running => None,
                InstanceState::Exited { code, signal }
                    if code.is_some() || signal.is_some() || l.oom_killed =>
                {
                    Some(l.state_words())
                }
                InstanceState::Exited { .. } => Some("is gone".to_owned()),
            },
        })
        .collect()
}

/// Carries out a policy's `Decision::Probe`: the spec's HTTP probe, or
/// for readiness without a path, whether the port accepts. `None`: the
/// spec has no such probe.
pub(crate) async fn probe_as_asked(
    check: Check,
    addr: SocketAddr,
    health: &hatoba_spec::Health,
) -> Option<Result<(), ProbeFailure>> {
    Some(match (check, &health.readiness, &health.liveness) {
        (Check::Readiness, Some(p), _) | (Check::Liveness, _, Some(p)) => {
            http_probe(addr, &p.path, p.timeout).await
        }
        (Check::Readiness, None, _) => tcp_probe(addr).await,
        (Check::Liveness, _, None) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A listener that answers every connection with `answer` (or nothing).
    async fn answering(answer: Option<&'static [u8]>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    match answer {
                        Some(a) => {
                            let _ = s.write_all(a).await;
                        }
                        // Hold the connection without answering.
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_probe_says_why_it_failed() {
        let t = Duration::from_millis(300);
        let ok = answering(Some(b"HTTP/1.1 204 No Content\r\n\r\n")).await;
        assert_eq!(http_probe(ok, "/", t).await, Ok(()));
        let redirect = answering(Some(b"HTTP/1.0 302 Found\r\n\r\n")).await;
        assert_eq!(http_probe(redirect, "/", t).await, Ok(()));
        let missing = answering(Some(b"HTTP/1.1 404 Not Found\r\n\r\n")).await;
        assert_eq!(
            http_probe(missing, "/ready", t).await,
            Err(ProbeFailure::Status(404))
        );
        let garbage = answering(Some(b"SSH-2.0-OpenSSH_9.2p1\r\n")).await;
        assert_eq!(
            http_probe(garbage, "/", t).await,
            Err(ProbeFailure::NotHttp)
        );
        let short = answering(Some(b"HTTP/1.1")).await;
        assert!(matches!(
            http_probe(short, "/", t).await,
            Err(ProbeFailure::Io(m)) if m.contains("closed")
        ));
        let silent = answering(None).await;
        let failed = http_probe(silent, "/", t).await.unwrap_err();
        assert_eq!(failed, ProbeFailure::Timeout(t));
        assert_eq!(failed.to_string(), "no answer within 300ms");
        // A port nothing listens on: bind, note the port, close.
        let gone = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(http_probe(gone, "/", t).await, Err(ProbeFailure::Refused));
        assert_eq!(tcp_probe(gone).await, Err(ProbeFailure::Refused));
        assert_eq!(tcp_probe(ok).await, Ok(()));
    }

    #[tokio::test]
    async fn a_probe_reads_the_whole_answer_so_the_app_sees_no_reset() {
        // An app that answers 200 with a body, closes its side as
        // `Connection: close` asks, then waits for the probe to close: a
        // probe that dropped the socket with the body unread made the
        // kernel send a reset, which the app saw (ECONNRESET) and logged.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            let body = vec![b'x'; 32 * 1024];
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&body).await.unwrap();
            s.shutdown().await.unwrap();
            // What the app sees of the probe's end: a clean close (0) or a
            // reset (an error).
            s.read(&mut buf).await.map_err(|e| e.kind())
        });
        assert_eq!(http_probe(addr, "/", Duration::from_secs(5)).await, Ok(()));
        assert_eq!(app.await.unwrap(), Ok(0));
    }

    #[test]
    fn a_probe_the_controller_could_not_make_changes_nothing() {
        // The policy gets no observation of the instance (its traces
        // show that `NotMade` changes nothing), and a failure keeps why.
        let short = Err(ProbeFailure::Controller("Too many open files".to_owned()));
        assert_eq!(policy_result(&short), ProbeResult::NotMade);
        assert_eq!(policy_result(&Ok(())), ProbeResult::Pass);
        assert_eq!(
            policy_result(&Err(ProbeFailure::Refused)),
            ProbeResult::Fail {
                why: "connection refused".to_owned(),
                refused: true
            }
        );
        assert_eq!(
            policy_result(&Err(ProbeFailure::Status(503))),
            ProbeResult::Fail {
                why: "answered 503".to_owned(),
                refused: false
            }
        );
        // A start that failed for EMFILE deep in its chain is the
        // controller's too; a missing program is not.
        let spawn = |errno| hatoba_runtime::RuntimeError::Spawn {
            service: "web".parse().unwrap(),
            program: "app".to_owned(),
            resolved: None,
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert!(is_controller_shortage_in(&spawn(24)));
        assert!(!is_controller_shortage_in(&spawn(2)));
        // And EMFILE is read as the controller's, a refusal as the instance's.
        assert!(matches!(
            io_failure(std::io::Error::from_raw_os_error(24)),
            ProbeFailure::Controller(_)
        ));
        assert_eq!(
            io_failure(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            ProbeFailure::Refused
        );
    }
}
