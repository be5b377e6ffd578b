//! The `command` provider: runs a program (no shell: `command` is the
//! program, `args` its arguments; write `command: sh, args: [-c, "..."]`
//! for a shell) and judges by what it printed or how it exited.
//!
//! The rule, from the spec's "its exit status, or a number on its stdout":
//!
//! - Exit 0 and a number on the last non-empty line of stdout: that number
//!   (NaN and ±Inf are inconclusive).
//! - Exit 0 and nothing on stdout: 1.
//! - Exit 0 and something else on the last line: inconclusive (a check
//!   that prints `0,95` must not pass as 1); send logs to stderr.
//! - Any other exit status: 0, whatever it printed, as
//!   [`Measurement::Failed`]: it can fail a metric, never pass one.
//! - Killed by a signal (not ours), or cannot start: inconclusive.
//!
//! The program runs in `working_dir`, with stdin closed, in its own process
//! group, with the parent's environment plus `HATOBA_SERVICE`,
//! `HATOBA_VERSION`, `HATOBA_CANARY_VERSION`, `HATOBA_STABLE_VERSION` (when
//! there is one), `HATOBA_ENV` and `HATOBA_ARG_<NAME>` per template
//! argument (the name upper-cased, anything but letters and digits as
//! `_`). Placeholders are replaced in the program and its arguments. A
//! relative program with a `/` (`./check.sh`) is found from `working_dir`;
//! one without is looked up on `PATH`.
//!
//! When the program exits, or when it runs past the timeout, or when the
//! measurement is dropped, its whole process group is killed with SIGKILL,
//! so nothing it started outlives it. Only the last [`OUTPUT_LIMIT`] bytes
//! of stdout are kept (the rest is read and dropped, so the program never
//! blocks on a full pipe).

use super::{Args, DEFAULT_COMMAND_TIMEOUT, Measurement, or_default, snippet, substitute};
use hatoba_core::format_duration;
use hatoba_spec::CommandProvider;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The most of a command's stdout kept: its last 64 KiB.
pub const OUTPUT_LIMIT: usize = 64 << 10;
/// The most of its stderr kept for messages: its last 4 KiB.
const STDERR_LIMIT: usize = 4 << 10;
/// How long to wait for a killed program to be reaped and its pipes to close.
const REAP_GRACE: Duration = Duration::from_secs(2);

/// Runs `p.command` with `p.args` (placeholders replaced from `args`) in
/// `working_dir`, within `p.timeout` (30 s when zero).
pub async fn command(p: &CommandProvider, args: &Args, working_dir: &Path) -> Measurement {
    let who = format!("command `{}`", p.command);
    let inconclusive = |why: String| Measurement::Inconclusive(format!("{who}: {why}"));
    let program = match substitute(&p.command, args) {
        Ok(program) => program,
        Err(e) => return inconclusive(format!("not run: {e}")),
    };
    let mut argv = Vec::with_capacity(p.args.len());
    for arg in &p.args {
        match substitute(arg, args) {
            Ok(arg) => argv.push(arg),
            Err(e) => return inconclusive(format!("not run: {e}")),
        }
    }
    let program_path = PathBuf::from(&program);
    let program_path = if program.contains('/') && program_path.is_relative() {
        working_dir.join(program_path)
    } else {
        program_path
    };
    let mut cmd = tokio::process::Command::new(&program_path);
    cmd.args(&argv)
        .current_dir(working_dir)
        .env("HATOBA_SERVICE", &args.service)
        .env("HATOBA_VERSION", &args.version)
        .env("HATOBA_CANARY_VERSION", &args.canary_version)
        .env("HATOBA_ENV", &args.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(stable) = &args.stable_version {
        cmd.env("HATOBA_STABLE_VERSION", stable);
    }
    for (name, value) in &args.template_args {
        cmd.env(arg_variable(name), value);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return inconclusive(format!(
                "cannot start {} in {}: {e}",
                program_path.display(),
                working_dir.display()
            ));
        }
    };
    let Some(group) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(|id| KillGroup(Pid::from_raw(id)))
    else {
        return inconclusive("started but has no process id".to_owned());
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return inconclusive("started without its output pipes".to_owned());
    };

    let timeout = or_default(p.timeout, DEFAULT_COMMAND_TIMEOUT);
    let run = async {
        tokio::join!(
            async {
                let status = child.wait().await;
                // Whatever it left running would hold the pipes open.
                group.kill();
                status
            },
            read_tail(stdout, OUTPUT_LIMIT),
            read_tail(stderr, STDERR_LIMIT),
        )
    };
    let Ok((status, stdout, stderr)) = tokio::time::timeout(timeout, run).await else {
        group.kill();
        let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
        return inconclusive(format!(
            "no answer within {}; its process group was killed",
            format_duration(timeout)
        ));
    };
    let status = match status {
        Ok(status) => status,
        Err(e) => return inconclusive(format!("cannot wait for it: {e}")),
    };
    let stderr_note = || match &stderr {
        Ok(bytes) if !bytes.trim_ascii().is_empty() => {
            format!(" (stderr: {})", snippet(tail_chars(bytes, 200), 200))
        }
        _ => String::new(),
    };
    match status.code() {
        Some(0) => {}
        Some(code) => {
            return Measurement::Failed(format!("{who} exited {code}{}", stderr_note()));
        }
        None => {
            let signal = status
                .signal()
                .and_then(|s| Signal::try_from(s).ok())
                .map_or_else(|| "a signal".to_owned(), |s| s.as_str().to_owned());
            return inconclusive(format!("was killed by {signal}{}", stderr_note()));
        }
    }
    let stdout = match stdout {
        Ok(bytes) => bytes,
        Err(e) => return inconclusive(format!("cannot read its output: {e}")),
    };
    let text = String::from_utf8_lossy(&stdout);
    let Some(last) = text.lines().map(str::trim).rfind(|l| !l.is_empty()) else {
        return Measurement::Value(1.0);
    };
    match last.parse::<f64>() {
        Ok(v) => Measurement::finite(v, &who),
        Err(_) => inconclusive(format!(
            "exited 0 but its last line of output is not a number: `{}`; print a number \
             last, or nothing to be judged by the exit status{}",
            snippet(last.as_bytes(), 100),
            stderr_note()
        )),
    }
}

/// `HATOBA_ARG_<NAME>`: upper case, anything but ASCII letters and digits as `_`.
fn arg_variable(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("HATOBA_ARG_{name}")
}

/// Reads `reader` to its end, keeping only the last `limit` bytes.
async fn read_tail(mut reader: impl AsyncRead + Unpin, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 8 << 10];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&chunk[..n]);
        if kept.len() > 2 * limit {
            kept.drain(..kept.len() - limit);
        }
    }
    if kept.len() > limit {
        kept.drain(..kept.len() - limit);
    }
    Ok(kept)
}

/// About the last `n` characters of `bytes` (at least `n` bytes' worth).
fn tail_chars(bytes: &[u8], n: usize) -> &[u8] {
    &bytes[bytes.len().saturating_sub(n)..]
}

/// Kills the program's process group with SIGKILL when asked or dropped.
///
/// The group's id is the program's pid (it is the group's leader). Killing
/// the group after the leader was reaped is safe while any member lives (the
/// id cannot be reused then); once none does, the kill finds no group.
struct KillGroup(Pid);

impl KillGroup {
    fn kill(&self) {
        // ESRCH (already gone) is the usual answer after a clean exit.
        let _ = killpg(self.0, Signal::SIGKILL);
    }
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_arguments_become_variables() {
        assert_eq!(
            arg_variable("canary-weight.x"),
            "HATOBA_ARG_CANARY_WEIGHT_X"
        );
    }

    #[tokio::test]
    async fn only_the_tail_of_the_output_is_kept() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let kept = read_tail(&data[..], 1000).await.unwrap();
        assert_eq!(kept, &data[data.len() - 1000..]);
    }
}
