//! A watchdog beside a test's server (PostgreSQL, Prometheus): if the test
//! process dies without dropping the server (a panic that aborts, a
//! SIGKILL), the watchdog's stdin closes and it stops the server and
//! removes its directory, so nothing outlives the test run. On a normal
//! drop the watchdog is disarmed first and does nothing.

use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

/// Arguments: pid, first signal, tenths of a second to wait, directory.
/// After the wait, SIGKILL; then the directory goes.
const SCRIPT: &str = r#"
trap '' INT HUP TERM QUIT PIPE
read _ignored
kill -"$2" "$1" 2>/dev/null
i=0
while kill -0 "$1" 2>/dev/null && [ "$i" -lt "$3" ]; do sleep 0.1; i=$((i + 1)); done
kill -0 "$1" 2>/dev/null && kill -KILL "$1" 2>/dev/null
rm -rf "$4"
"#;

/// A running watchdog; see the module docs.
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
    /// Kept open so the watchdog's `read` blocks until this process is gone.
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Watches `pid`: on this process's death, sends `signal` (`INT`,
    /// `KILL`), waits up to `grace_tenths` tenths of a second, kills, and
    /// removes `dir`.
    pub(crate) fn spawn(
        name: &str,
        pid: u32,
        signal: &str,
        grace_tenths: u32,
        dir: &Path,
    ) -> std::io::Result<Watchdog> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg(name)
            .arg(pid.to_string())
            .arg(signal)
            .arg(grace_tenths.to_string())
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    /// Stands down, before the owner stops the server itself (so the
    /// watchdog cannot act on a pid being reaped).
    pub(crate) fn disarm(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.stdin.take());
    }
}
