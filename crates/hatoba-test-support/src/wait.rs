//! Waiting with a deadline, and free loopback ports.
//!
//! Waits poll a condition, backing off from 5 ms to 100 ms, until it holds or
//! the deadline passes; nothing here sleeps a fixed time hoping something
//! became ready.

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

/// A condition did not hold before its deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("condition still false after {waited:?}")]
pub struct TimedOut {
    /// How long it was polled.
    pub waited: Duration,
}

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Polls `ready` until it returns true or `deadline` has passed (it is
/// always asked at least once, and once more at the deadline).
pub fn wait_for(deadline: Duration, mut ready: impl FnMut() -> bool) -> Result<(), TimedOut> {
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        if ready() {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= deadline {
            return Err(TimedOut { waited });
        }
        std::thread::sleep(pause.min(deadline - waited));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// [`wait_for`] for async conditions, sleeping with `tokio::time` (so it
/// follows a paused test clock).
pub async fn wait_for_async<F, Fut>(deadline: Duration, mut ready: F) -> Result<(), TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        if ready().await {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= deadline {
            return Err(TimedOut { waited });
        }
        tokio::time::sleep(pause.min(deadline - waited)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// A port on 127.0.0.1 that was free a moment ago. Another process may take
/// it before the caller binds it: callers that start servers retry on a
/// clash.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_until_true_or_deadline() {
        let mut calls = 0;
        wait_for(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        })
        .unwrap();
        assert_eq!(calls, 3);
        let err = wait_for(Duration::from_millis(30), || false).unwrap_err();
        assert!(err.waited >= Duration::from_millis(30));
    }

    #[tokio::test(start_paused = true)]
    async fn async_wait_follows_the_test_clock() {
        let start = tokio::time::Instant::now();
        let err = wait_for_async(Duration::from_secs(3600), || async { false })
            .await
            .unwrap_err();
        assert!(err.waited >= Duration::from_secs(3600));
        assert!(start.elapsed() >= Duration::from_secs(3600));
    }

    #[test]
    fn free_ports_can_be_bound() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}
