//! Instance log files: opened private to their owner, rotated by copy
//! and truncate.
//!
//! An instance's output can hold secrets (a token in a debug line), so its
//! log is mode 0600 in a 0700 directory whatever the umask, and a log left
//! 0644 by an older Hatoba is tightened when it is opened again; rotated
//! copies take the log's mode.
//!
//! An instance writes its output straight into `<id>.log` through a file
//! descriptor opened with `O_APPEND`, which the runtime cannot reopen for
//! it. So a log over its size limit is copied to `<id>.log.1` (older copies
//! shifted to `.2`, `.3`, ... and the oldest beyond the limit dropped) and
//! then truncated to zero; because every write of the instance goes to the
//! current end of the file, its next line lands at the start of the emptied
//! file, with no hole. Lines written between the copy and the truncation
//! are lost: the price of copytruncate.
//!
//! Old versions' logs do not pile up: beside each log, `<id>.version` names
//! the instance's version, and [`prune_versions`] deletes the logs (rotated
//! copies included) of the instances of all but the newest versions of a
//! service, never those of a running instance.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// How large an instance log may grow and how many rotated copies are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// A log larger than this many bytes is rotated.
    pub max_bytes: u64,
    /// Rotated copies kept (`<id>.log.1` is the newest); 0 keeps none and
    /// only empties the log.
    pub keep: usize,
}

impl Default for LogLimits {
    /// 10 MiB per file, three rotated copies.
    fn default() -> LogLimits {
        LogLimits {
            max_bytes: 10 * 1024 * 1024,
            keep: 3,
        }
    }
}

/// A log that could not be rotated (it is tried again on the next call).
#[derive(Debug, thiserror::Error)]
#[error("cannot rotate the log {}: {what}", path.display())]
pub struct LogRotateError {
    /// The instance log.
    pub path: PathBuf,
    /// The step that failed, naming the file it touched.
    pub what: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// What one round of rotation did.
#[derive(Debug, Default)]
pub struct LogRotation {
    /// The logs that were over their limit and were rotated.
    pub rotated: Vec<PathBuf>,
    /// The logs that were over their limit (or could not be measured) and
    /// could not be rotated.
    pub failed: Vec<LogRotateError>,
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The mode of instance logs and their rotated copies.
const LOG_MODE: u32 = 0o600;
/// The mode of the directories that hold them.
const LOG_DIR_MODE: u32 = 0o700;

/// Creates `dir` (and its parents) mode 0700 if missing.
pub(crate) fn create_log_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(LOG_DIR_MODE)
        .create(dir)
}

/// Opens `path` for appending, creating it, mode 0600 however it was
/// before: appending is what lets [`rotate`] truncate it under the instance.
pub(crate) fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_MODE)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(LOG_MODE))?;
    Ok(file)
}

/// Rotates `path` if it is larger than the limit; `Ok(true)` when it did.
/// A log that does not exist (yet) is not an error.
pub(crate) fn rotate(path: &Path, limits: LogLimits) -> Result<bool, LogRotateError> {
    let fail = |what: String| {
        move |source| LogRotateError {
            path: path.to_owned(),
            what,
            source,
        }
    };
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(fail("cannot measure it".to_owned())(e)),
    };
    if len <= limits.max_bytes {
        return Ok(false);
    }
    if limits.keep > 0 {
        // Shift .{keep-1} -> .{keep} (replacing the oldest), ..., .1 -> .2.
        for n in (1..limits.keep).rev() {
            let from = numbered(path, n);
            match std::fs::rename(&from, numbered(path, n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(format!("cannot rename {}", from.display()))(e)),
            }
        }
        let first = numbered(path, 1);
        std::fs::copy(path, &first)
            .map_err(fail(format!("cannot copy it to {}", first.display())))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(0))
        .map_err(fail("cannot truncate it".to_owned()))?;
    Ok(true)
}

/// Writes `<id>.version` beside the log `<id>.log` (mode 0600).
pub(crate) fn write_version(log: &Path, version: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(LOG_MODE)
        .open(log.with_extension("version"))?;
    f.write_all(version.as_bytes())
}

/// In one service's log directory, keeps the logs of the instances of the
/// `keep` most recently used versions (by the newest modification time of
/// their files) and deletes the others' (`<id>.log`, `<id>.log.N`,
/// `<id>.version`), except those of the instances in `running` (by id).
/// Logs without a `<id>.version` (from before it existed) are left alone.
/// Returns the files deleted.
pub(crate) fn prune_versions(
    dir: &Path,
    keep: usize,
    running: &std::collections::HashSet<String>,
) -> std::io::Result<Vec<PathBuf>> {
    use std::collections::BTreeMap;
    // version -> its instances' ids; id -> its files.
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .split_once(".log")
            .map(|(id, _)| id)
            .or_else(|| name.strip_suffix(".version"))
        else {
            continue;
        };
        files.entry(id.to_owned()).or_default().push(entry.path());
        if name.ends_with(".version") {
            let version = std::fs::read_to_string(entry.path())?.trim().to_owned();
            versions.entry(version).or_default().push(id.to_owned());
        }
    }
    // A version's recency: the newest file of any of its instances.
    let mut ranked: Vec<(std::time::SystemTime, String, Vec<String>)> = versions
        .into_iter()
        .map(|(version, ids)| {
            let newest = ids
                .iter()
                .flat_map(|id| files.get(id).into_iter().flatten())
                .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
                .max()
                .unwrap_or(std::time::UNIX_EPOCH);
            (newest, version, ids)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    let mut deleted = Vec::new();
    for (_, _, ids) in ranked.into_iter().skip(keep) {
        for id in ids.iter().filter(|id| !running.contains(*id)) {
            for path in files.get(id).into_iter().flatten() {
                match std::fs::remove_file(path) {
                    Ok(()) => deleted.push(path.clone()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"))
    }

    #[test]
    fn shifts_copies_and_drops_the_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("web-v1-0001.log");
        let limits = LogLimits {
            max_bytes: 4,
            keep: 2,
        };
        assert!(!rotate(&log, limits).expect("missing is fine"));
        std::fs::write(&log, "1234").expect("write");
        assert!(!rotate(&log, limits).expect("at the limit"), "not over");
        for generation in ["first", "second", "third"] {
            std::fs::write(&log, generation).expect("write");
            assert!(rotate(&log, limits).expect("rotates"));
            assert_eq!(read(&log), "");
        }
        assert_eq!(read(&numbered(&log, 1)), "third");
        assert_eq!(read(&numbered(&log, 2)), "second");
        assert!(!numbered(&log, 3).exists());
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn logs_are_private_and_stay_so_when_rotated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs").join("web");
        create_log_dir(&logs).expect("mkdir");
        assert_eq!(mode(&logs), 0o700);
        let new = logs.join("new.log");
        drop(open_log(&new).expect("open"));
        assert_eq!(mode(&new), 0o600);

        // Left world-readable by an older Hatoba: tightened on open.
        let old = logs.join("old.log");
        std::fs::write(&old, "earlier line\n").expect("write");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        {
            use std::io::Write as _;
            let mut f = open_log(&old).expect("open");
            f.write_all(b"later line\n").expect("append");
        }
        assert_eq!(mode(&old), 0o600);
        assert_eq!(
            read(&old),
            "earlier line\nlater line\n",
            "appended, not truncated"
        );

        let limits = LogLimits {
            max_bytes: 1,
            keep: 1,
        };
        assert!(rotate(&old, limits).expect("rotates"));
        assert_eq!(mode(&numbered(&old, 1)), 0o600, "the rotated copy");
    }

    #[test]
    fn keeping_none_only_truncates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("a.log");
        std::fs::write(&log, "too long").expect("write");
        let limits = LogLimits {
            max_bytes: 1,
            keep: 0,
        };
        assert!(rotate(&log, limits).expect("rotates"));
        assert_eq!(read(&log), "");
        assert!(!numbered(&log, 1).exists());
    }

    #[test]
    fn failures_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("b.log");
        std::fs::write(&log, "too long").expect("write");
        // `.1` is a non-empty directory: the copy cannot replace it.
        std::fs::create_dir_all(numbered(&log, 1).join("x")).expect("mkdir");
        let limits = LogLimits {
            max_bytes: 1,
            keep: 1,
        };
        let err = rotate(&log, limits).expect_err("cannot copy");
        let msg = err.to_string();
        assert!(msg.contains(&log.display().to_string()), "{msg}");
        assert!(msg.contains("b.log.1"), "{msg}");
        assert_eq!(read(&log), "too long", "not truncated when the copy failed");
    }

    #[test]
    fn only_the_newest_versions_keep_the_logs_of_stopped_instances() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = std::time::UNIX_EPOCH;
        // v1..v4, one instance each, v(n) last written at n hours; v1's
        // instance also has rotated copies; `web-1` still runs.
        for n in 1..=4u64 {
            let id = format!("web-{n}");
            let log = dir.path().join(format!("{id}.log"));
            std::fs::write(&log, format!("v{n}\n")).unwrap();
            write_version(&log, &format!("v{n}")).unwrap();
            let mut files = vec![log.clone(), log.with_extension("version")];
            if n == 2 {
                for k in 1..=2 {
                    std::fs::write(numbered(&log, k), "old\n").unwrap();
                    files.push(numbered(&log, k));
                }
            }
            for f in files {
                let at = epoch + std::time::Duration::from_secs(3600 * n);
                std::fs::File::options()
                    .write(true)
                    .open(&f)
                    .unwrap()
                    .set_modified(at)
                    .unwrap();
            }
        }
        // A log from before version files existed is left alone.
        std::fs::write(dir.path().join("web-0.log"), "?\n").unwrap();
        let running = std::collections::HashSet::from(["web-1".to_owned()]);
        let mut deleted = prune_versions(dir.path(), 2, &running).unwrap();
        deleted.sort();
        let names: Vec<String> = deleted
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["web-2.log", "web-2.log.1", "web-2.log.2", "web-2.version"]
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "web-0.log",
                "web-1.log",
                "web-1.version",
                "web-3.log",
                "web-3.version",
                "web-4.log",
                "web-4.version"
            ]
        );
        // Nothing more to do: a second round deletes nothing.
        assert!(prune_versions(dir.path(), 2, &running).unwrap().is_empty());
    }
}
