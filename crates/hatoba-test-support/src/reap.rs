//! Ending what a test started, however the test ends: [`ScopeReaper`]
//! kills, when dropped, every process whose environment carries
//! `HATOBA_SCOPE=<scope>` (a process runtime's instances and whatever they
//! started), so a test that panics half-way leaves no instance running.

use std::time::Duration;

/// The running processes (zombies left out) whose environment has
/// `HATOBA_SCOPE=scope`.
pub fn processes_in_scope(scope: &str) -> Vec<i32> {
    let wanted = format!("HATOBA_SCOPE={scope}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == wanted.as_bytes()))
        })
        .collect()
}

/// Whether `pid` exists and is not a zombie.
/// Whether `pid` runs (a zombie does not).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// Kills every process of a scope ([`processes_in_scope`]) with SIGKILL
/// when dropped, each one's process group too when it leads one, and waits
/// (at most 10 s) until they are gone.
#[derive(Debug)]
pub struct ScopeReaper(pub String);

impl Drop for ScopeReaper {
    fn drop(&mut self) {
        let _ = kill_and_wait(processes_in_scope(&self.0), Duration::from_secs(10));
    }
}

/// Sends SIGKILL to each of `pids`, and to its process group when it leads
/// one (not this process's own group), then waits until they are gone or
/// `within` has passed; returns those still running.
pub fn kill_and_wait(mut pids: Vec<i32>, within: Duration) -> Vec<i32> {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::{Pid, getpgid, getpgrp};
    let ours = getpgrp();
    for pid in &pids {
        let pid = Pid::from_raw(*pid);
        if getpgid(Some(pid)).is_ok_and(|g| g == pid && g != ours) {
            let _ = killpg(pid, Signal::SIGKILL);
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    let _ = crate::wait_for(within, || {
        pids.retain(|pid| alive(*pid));
        pids.is_empty()
    });
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child killed and reaped on drop, whatever the test does.
    struct Child(std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_reaper_ends_the_processes_of_its_scope_only() {
        let spawn = |scope: &str| {
            Child(
                std::process::Command::new("sleep")
                    .arg("60")
                    .env("HATOBA_SCOPE", scope)
                    .spawn()
                    .unwrap(),
            )
        };
        let scope = format!("reap-test-{}", std::process::id());
        let other = format!("{scope}-other");
        let mut mine = spawn(&scope);
        let mut theirs = spawn(&other);
        crate::wait_for(Duration::from_secs(10), || {
            processes_in_scope(&scope).len() == 1 && processes_in_scope(&other).len() == 1
        })
        .unwrap();
        drop(ScopeReaper(scope.clone()));
        // The other one untouched; this one killed (a zombie until reaped
        // here, so the reaper did not wait for its 60 s).
        assert!(matches!(theirs.0.try_wait(), Ok(None)));
        assert!(matches!(mine.0.try_wait(), Ok(Some(s)) if s.code().is_none()));
    }
}
