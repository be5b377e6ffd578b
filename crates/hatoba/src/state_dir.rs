//! The state directory's guards for `hatoba up`: one controller per
//! directory (an OS file lock held for the server's life), a private
//! directory (0700) with private files (0600, never through a symbolic
//! link), and enough file descriptors.
//!
//! Why a lock and not `server.json`: checking that file and writing it are
//! two steps, so two `hatoba up` started at the same instant both passed
//! the check. `flock` is taken or refused in one step, and the kernel lets
//! go when the process ends, however it ends (`kill -9` included), so a
//! stale lock never blocks a restart.

use crate::exit::{CliError, Exit};
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The controller's lock file in a state directory.
pub(crate) fn lock_path(state: &Path) -> PathBuf {
    state.join("controller.lock")
}

/// Creates the state directory private to its owner, or makes an existing
/// one private: it holds the API token, the history and the logs.
pub(crate) fn prepare(state: &Path) -> Result<(), CliError> {
    let failed = |what: &str, e: std::io::Error| {
        CliError::new(
            Exit::Failed,
            format!(
                "cannot {what} the state directory `{}`: {e}",
                state.display()
            ),
        )
    };
    std::fs::create_dir_all(state).map_err(|e| failed("create", e))?;
    let meta = std::fs::metadata(state).map_err(|e| failed("read", e))?;
    if !meta.is_dir() {
        return Err(CliError::new(
            Exit::BadInput,
            format!(
                "the state directory `{}` is not a directory",
                state.display()
            ),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| failed("make private", e))?;
    }
    Ok(())
}

/// The held lock: the controller of this state directory while it lives.
#[derive(Debug)]
pub(crate) struct ControllerLock {
    _file: File,
}

impl ControllerLock {
    /// Takes the lock, or refuses (exit 5) naming the controller that holds
    /// it.
    pub(crate) fn acquire(state: &Path) -> Result<ControllerLock, CliError> {
        use hatoba_proxy::control::{PidLock, take_pid_lock};
        let path = lock_path(state);
        refuse_symlink(&path)?;
        match take_pid_lock(&path) {
            Ok(PidLock::Held(file)) => Ok(ControllerLock { _file: file }),
            Ok(PidLock::Taken { pid }) => {
                let holder =
                    pid.map_or_else(|| "another process".to_owned(), |p| format!("pid {p}"));
                Err(CliError::new(
                    Exit::Conflict,
                    format!(
                        "a Hatoba server already runs for `{}` ({holder} holds {})",
                        state.display(),
                        path.display()
                    ),
                )
                .hint("stop it first, or use another --state-dir"))
            }
            Err(e) => Err(CliError::new(
                Exit::Failed,
                format!("cannot lock `{}`: {e}", path.display()),
            )),
        }
    }
}

fn refuse_symlink(path: &Path) -> Result<(), CliError> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(CliError::new(
            Exit::BadInput,
            format!(
                "`{}` is a symbolic link; Hatoba does not write through links in its state directory",
                path.display()
            ),
        )
        .hint("remove the link; Hatoba writes a new file there"));
    }
    Ok(())
}

/// Writes a file only its owner can read (0600 whatever existed before),
/// whole or not at all: the bytes go to a new file that then replaces the
/// old one. A symbolic link in its place is refused, not followed.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    refuse_symlink(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    // The umask cannot widen 0600, but an explicit mode says it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Raises the soft limit on open files to the hard one, as servers do: the
/// controller holds a socket per API client, probe and instance log, and
/// the data plane two per proxied connection.
pub(crate) fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = ControllerLock::acquire(dir.path()).unwrap();
        let refused = ControllerLock::acquire(dir.path()).unwrap_err();
        assert_eq!(refused.exit, Exit::Conflict);
        assert!(
            refused
                .to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(held);
        ControllerLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn private_files_are_0600_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "old").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&token, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&token).unwrap(), "new");
        let mode = std::fs::metadata(&token).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A link to elsewhere is refused, and its target is left as it was.
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "precious").unwrap();
        let link = dir.path().join("linked");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write_private(&link, b"new").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    }

    #[test]
    fn the_state_directory_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
