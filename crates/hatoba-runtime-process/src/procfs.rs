//! Reading Linux's `/proc`: a process's stat line (state, process group, CPU
//! ticks, start time), its initial environment, its resident memory, and the
//! list of processes. Every reader returns `None` for what it cannot read or
//! make sense of (a process that ended meanwhile, another user's process,
//! odd contents); nothing here panics on what the kernel hands back.

use nix::unistd::{SysconfVar, sysconf};
use std::path::Path;

/// The fields of `/proc/<pid>/stat` this runtime uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub(crate) state: char,
    /// Field 5: the process group.
    pub(crate) pgrp: i32,
    /// Fields 14 and 15, then 16 and 17: CPU time in clock ticks, of the
    /// process itself (user, system) and of its waited-for children.
    pub(crate) utime: u64,
    pub(crate) stime: u64,
    pub(crate) cutime: u64,
    pub(crate) cstime: u64,
    /// Field 22: when the process started, in clock ticks since boot.
    pub(crate) start: u64,
}

impl Stat {
    /// A zombie or dead process: it has ended, only its entry remains.
    pub(crate) fn has_ended(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// CPU ticks of the process and of its children it has waited for.
    pub(crate) fn ticks(&self) -> u64 {
        self.utime
            .saturating_add(self.stime)
            .saturating_add(self.cutime)
            .saturating_add(self.cstime)
    }
}

/// Parses a stat line. The second field is the command name in parentheses,
/// which may itself hold spaces and parentheses, so the fields are counted
/// from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3.
    let field = |n: usize| fields.get(n.checked_sub(3)?).copied();
    let unsigned = |n: usize| field(n)?.parse::<u64>().ok();
    // cutime and cstime are signed in the kernel's format.
    let signed = |n: usize| {
        field(n)?
            .parse::<i64>()
            .ok()
            .map(|v| u64::try_from(v).unwrap_or(0))
    };
    Some(Stat {
        state: field(3)?.chars().next()?,
        pgrp: field(5)?.parse().ok()?,
        utime: unsigned(14)?,
        stime: unsigned(15)?,
        cutime: signed(16)?,
        cstime: signed(17)?,
        start: unsigned(22)?,
    })
}

/// `/proc/<pid>/stat`, parsed (the command name need not be UTF-8).
pub(crate) fn stat(pid: u32) -> Option<Stat> {
    let bytes = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&String::from_utf8_lossy(&bytes))
}

/// The process's environment as it was when it executed its program.
pub(crate) fn environ(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// The value of `key` in a NUL-separated environment block.
pub(crate) fn env_value<'a>(environ: &'a [u8], key: &str) -> Option<&'a [u8]> {
    environ.split(|b| *b == 0).find_map(|kv| {
        kv.strip_prefix(key.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"="))
    })
}

/// Resident pages: field 2 of `/proc/<pid>/statm`.
pub(crate) fn resident_pages(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The ids of the processes on the machine (the numeric entries of `/proc`).
pub(crate) fn pids() -> std::io::Result<Vec<u32>> {
    Ok(std::fs::read_dir(Path::new("/proc"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// Whether `pid` is still the live process that started at `start`.
pub(crate) fn alive(pid: u32, start: u64) -> bool {
    stat(pid).is_some_and(|s| s.start == start && !s.has_ended())
}

/// Clock ticks per second (`CLK_TCK`); 100 if the system will not say.
pub(crate) fn ticks_per_second() -> u64 {
    sysconf_or(SysconfVar::CLK_TCK, 100)
}

/// The size of a memory page; 4096 if the system will not say.
pub(crate) fn page_size() -> u64 {
    sysconf_or(SysconfVar::PAGE_SIZE, 4096)
}

fn sysconf_or(var: SysconfVar, default: u64) -> u64 {
    sysconf(var)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(comm: &str, state: char, start: u64) -> String {
        format!(
            "4242 ({comm}) {state} 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 -1 2 20 0 1 0 \
             {start} 1000 50 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0"
        )
    }

    #[test]
    fn parses_after_the_last_parenthesis() {
        let s = parse_stat(&line("we ird) (name) S", 'R', 987_654)).expect("parses");
        assert_eq!(s.state, 'R');
        assert_eq!(s.pgrp, 4242);
        assert_eq!((s.utime, s.stime, s.cutime, s.cstime), (7, 3, 0, 2));
        assert_eq!(s.ticks(), 12);
        assert_eq!(s.start, 987_654);
        assert!(!s.has_ended());
        assert!(parse_stat(&line("x", 'Z', 1)).expect("parses").has_ended());
    }

    #[test]
    fn odd_contents_are_none_not_panics() {
        for text in [
            "",
            ")",
            "1 (x)",
            "1 (x) S 1 notanumber",
            "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12",
            "1 x S 1 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 5",
        ] {
            assert_eq!(parse_stat(text), None, "{text:?}");
        }
    }

    #[test]
    fn reads_its_own_entries() {
        let me = std::process::id();
        let s = stat(me).expect("own stat");
        assert!(alive(me, s.start));
        assert!(!alive(me, s.start.wrapping_add(1)));
        assert!(resident_pages(me).is_some_and(|p| p > 0));
        assert!(pids().expect("lists /proc").contains(&me));
        assert!(ticks_per_second() > 0 && page_size() > 0);
    }

    #[test]
    fn finds_environment_values() {
        let block = b"A=1\0HATOBA_INSTANCE=web-v1-00ff\0HATOBA_INSTANCE_X=no\0EMPTY=\0";
        assert_eq!(
            env_value(block, "HATOBA_INSTANCE"),
            Some(&b"web-v1-00ff"[..])
        );
        assert_eq!(env_value(block, "EMPTY"), Some(&b""[..]));
        assert_eq!(env_value(block, "HATOBA"), None);
        assert_eq!(env_value(b"", "A"), None);
    }
}
