//! `hatoba backup` and `hatoba restore`: a consistent copy of the
//! deployment history, and putting one back, checked first.
//!
//! SQLite: `backup` copies with `VACUUM INTO` (one read transaction, so the
//! server may keep writing) into a private temporary file beside the
//! destination, checks the copy and renames it into place; it never
//! replaces a file. `restore` refuses while a server runs for the state
//! directory (exit 5), checks a private copy of FILE (integrity, a Hatoba
//! history, migrations this version knows: exit 2 otherwise), moves the
//! database it replaces aside (`hatoba.db.before-restore-TIME`, with its
//! `-wal`) and renames the copy into place. PostgreSQL (`--store`):
//! `backup` runs `pg_dump` (custom format; the password goes through
//! `PGPASSWORD`, never the command line); `restore` is not built (exit 6)
//! and says how to use `pg_restore`.
//!
//! Also the end of `hatoba up`: [`checkpoint_at_stop`].

use crate::cli::{BackupArgs, Global, Output, RestoreArgs};
use crate::exit::{CliError, Exit};
use crate::output;
use anyhow::Context as _;
use hatoba_store::{SqlStore, StoreError};
use std::path::{Path, PathBuf};

pub(crate) async fn backup(global: &Global, args: &BackupArgs) -> anyhow::Result<Exit> {
    let result = match &global.store {
        Some(url) => backup_postgres(url, args.to.as_deref()).await?,
        None => backup_sqlite(global, args.to.as_deref()).await?,
    };
    match global.output {
        Output::Json => output::json(&result)?,
        Output::Text => {
            let holding = match result.deployments {
                Some(n) => format!(" ({n} deployments)"),
                None => String::new(),
            };
            let restore = if result.backend == "sqlite" {
                format!("restore it with `hatoba restore {}`", result.file)
            } else {
                format!(
                    "restore it with `pg_restore --clean --if-exists --dbname URL {}`",
                    result.file
                )
            };
            output::stdout(&format!(
                "wrote {}{holding}, {} bytes\n{restore}\n",
                result.file, result.bytes
            ));
        }
    }
    Ok(Exit::Ok)
}

async fn backup_sqlite(global: &Global, to: Option<&Path>) -> anyhow::Result<hatoba_api::Backup> {
    let store = crate::state::open_for_reading(global).await?;
    let dest = destination(to, "db");
    let tmp = temp_beside(&dest, ".hatoba-backup-")?;
    let copied = store.vacuum_into(tmp.path()).await;
    store.close().await;
    copied.with_context(|| {
        format!(
            "cannot copy the deployment history in `{}`",
            crate::state::sqlite_path(global).display()
        )
    })?;
    let deployments = SqlStore::check_sqlite_copy(tmp.path())
        .await
        .context("the copy just written does not check out")?;
    let bytes = put_in_place(tmp, &dest)?;
    Ok(hatoba_api::Backup {
        api_version: hatoba_api::API_VERSION.to_owned(),
        backend: "sqlite".to_owned(),
        file: dest.display().to_string(),
        bytes,
        deployments: Some(deployments),
    })
}

async fn backup_postgres(url: &str, to: Option<&Path>) -> anyhow::Result<hatoba_api::Backup> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(CliError::new(
            Exit::BadInput,
            "--store: expected a `postgres://` or `postgresql://` URL",
        )
        .into());
    }
    let (shown, password) = split_password(url);
    let dest = destination(to, "pgdump");
    let tmp = temp_beside(&dest, ".hatoba-backup-")?;
    let mut cmd = tokio::process::Command::new("pg_dump");
    cmd.args(["--format=custom", "--no-password", "--file"])
        .arg(tmp.path())
        .arg("--dbname")
        .arg(&shown)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().await.map_err(|e| {
        CliError::new(Exit::Failed, format!("cannot run pg_dump: {e}"))
            .hint("install PostgreSQL's client tools (pg_dump of the server's version or newer)")
    })?;
    if !out.status.success() {
        return Err(CliError::new(
            Exit::Failed,
            format!(
                "pg_dump could not copy {shown} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )
        .into());
    }
    let bytes = put_in_place(tmp, &dest)?;
    Ok(hatoba_api::Backup {
        api_version: hatoba_api::API_VERSION.to_owned(),
        backend: "postgres".to_owned(),
        file: dest.display().to_string(),
        bytes,
        deployments: None,
    })
}

pub(crate) async fn restore(global: &Global, args: &RestoreArgs) -> anyhow::Result<Exit> {
    if global.store.is_some() {
        return Err(CliError::new(
            Exit::NotBuilt,
            "restoring into PostgreSQL (--store) is not built into hatoba",
        )
        .hint(
            "stop the servers, then `pg_restore --clean --if-exists --dbname URL FILE` \
             with the archive `hatoba backup --store URL` wrote",
        )
        .into());
    }
    let state = &global.state_dir;
    // Held until the copy is in place: no `hatoba up` starts on the
    // history while it is replaced, and none runs now (exit 5 naming it).
    crate::state_dir::prepare(state)?;
    let _lock = crate::state_dir::ControllerLock::acquire(state)?;
    let file = &args.file;
    let shown = file.display().to_string();
    match std::fs::metadata(file) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(
                CliError::new(Exit::BadInput, format!("`{shown}` is not a regular file")).into(),
            );
        }
        Err(e) => {
            return Err(
                CliError::new(Exit::BadInput, format!("cannot read `{shown}`: {e}")).into(),
            );
        }
    }
    if std::fs::metadata(with_suffix(file, "-wal")).is_ok_and(|m| m.len() > 0) {
        return Err(CliError::new(
            Exit::BadInput,
            format!(
                "`{shown}` has a write-ahead log beside it (`{shown}-wal`): the file alone is not the whole history"
            ),
        )
        .hint("restore a copy written by `hatoba backup`")
        .into());
    }

    private_dir(state)?;
    // A private copy is checked and migrated; FILE itself is only read.
    let mut tmp = tempfile::Builder::new()
        .prefix(".hatoba-restore-")
        .suffix(".db")
        .tempfile_in(state)
        .map_err(|e| {
            CliError::new(
                Exit::Failed,
                format!("cannot write into `{}`: {e}", state.display()),
            )
        })?;
    std::fs::File::open(file)
        .and_then(|mut from| std::io::copy(&mut from, tmp.as_file_mut()))
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| CliError::new(Exit::BadInput, format!("cannot read `{shown}`: {e}")))?;
    let deployments = SqlStore::check_sqlite_copy(tmp.path())
        .await
        .map_err(|e| not_restorable(&shown, e))?;
    // Its schema brought up to date, as `hatoba up` would; a history
    // written by a Hatoba that knows migrations this one does not is
    // refused here.
    let migrated = SqlStore::open_sqlite(tmp.path())
        .await
        .map_err(|e| not_restorable(&shown, e))?;
    migrated
        .close_checkpointed()
        .await
        .context("cannot finish the restored copy")?;

    let db = crate::state::sqlite_path(global);
    let previous = move_aside(&db)?;
    tmp.persist(&db).map_err(|e| {
        CliError::new(
            Exit::Failed,
            format!(
                "cannot put the copy in place as `{}`: {}",
                db.display(),
                e.error
            ),
        )
    })?;
    sync_dir(state);
    // Once more as `hatoba up` will open it: checked, private.
    SqlStore::open_sqlite(&db)
        .await
        .context("cannot open the restored history")?
        .close_checkpointed()
        .await
        .context("cannot open the restored history")?;

    let result = hatoba_api::Restore {
        api_version: hatoba_api::API_VERSION.to_owned(),
        file: shown,
        database: db.display().to_string(),
        deployments,
        previous: previous.map(|p| p.display().to_string()),
    };
    match global.output {
        Output::Json => output::json(&result)?,
        Output::Text => {
            let mut text = format!(
                "restored {} deployments from {} into {}\n",
                result.deployments, result.file, result.database
            );
            if let Some(p) = &result.previous {
                text.push_str(&format!("the database it replaced is kept at {p}\n"));
            }
            output::stdout(&text);
        }
    }
    Ok(Exit::Ok)
}

/// At the end of `hatoba up`: the write-ahead log moved into `hatoba.db`
/// and emptied, so the `.db` file alone holds the history (copying it is a
/// backup). A failure is a warning: the history is safe in the `-wal` file.
pub(crate) async fn checkpoint_at_stop(state: &Path) {
    if let Err(e) = SqlStore::checkpoint_sqlite_file(state.join("hatoba.db")).await {
        output::stderr(&format!("warning: {}\n", crate::server_cmd::chain(&e)));
    }
}

/// Why a copy cannot be restored, said about the file the user named.
fn not_restorable(shown: &str, e: StoreError) -> CliError {
    match e {
        StoreError::Damaged { problem, .. } => CliError::new(
            Exit::BadInput,
            format!("`{shown}` is damaged ({problem}) and cannot be restored"),
        )
        .hint("restore an older backup"),
        StoreError::NotHistory { reason, .. } => CliError::new(
            Exit::BadInput,
            format!("`{shown}` is not a Hatoba history database: {reason}"),
        ),
        StoreError::Open { source, .. } => CliError::new(
            Exit::BadInput,
            format!("`{shown}` is not a database SQLite can open: {source}"),
        ),
        StoreError::Migrate { source, .. } => CliError::new(
            Exit::BadInput,
            format!("the history in `{shown}` does not fit this Hatoba's schema: {source}"),
        )
        .hint("restore it with the Hatoba version that wrote it"),
        other => CliError::new(
            Exit::Failed,
            format!(
                "cannot check `{shown}`: {}",
                crate::server_cmd::chain(&other)
            ),
        ),
    }
}

/// `to`, or `hatoba-backup-TIME.EXT` in the current directory.
fn destination(to: Option<&Path>, ext: &str) -> PathBuf {
    to.map_or_else(
        || PathBuf::from(format!("hatoba-backup-{}.{ext}", utc_stamp())),
        Path::to_path_buf,
    )
}

/// An empty private (0600) temporary file in `dest`'s directory, to be
/// renamed onto `dest` once written.
fn temp_beside(dest: &Path, prefix: &str) -> Result<tempfile::NamedTempFile, CliError> {
    if dest.symlink_metadata().is_ok() {
        return Err(exists(dest));
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(|e| {
            // tempfile's own words end with its random file's path, which
            // the operator never named.
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "no such directory".to_owned(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                std::io::ErrorKind::NotADirectory => "not a directory".to_owned(),
                kind => kind.to_string(),
            };
            CliError::new(
                Exit::BadInput,
                format!("cannot write into `{}`: {why}", dir.display()),
            )
            .hint("--to names a file in a directory that exists and you can write to")
        })
}

fn exists(dest: &Path) -> CliError {
    CliError::new(
        Exit::BadInput,
        format!(
            "`{}` already exists; a backup never replaces a file",
            dest.display()
        ),
    )
    .hint("choose another --to, or move the file away first")
}

/// Flushes the written temporary file and renames it onto `dest` (never
/// over an existing file); returns its size.
fn put_in_place(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<u64, CliError> {
    let failed = |what: &str, e: std::io::Error| {
        CliError::new(
            Exit::Failed,
            format!("cannot {what} `{}`: {e}", dest.display()),
        )
    };
    // SQLite and pg_dump wrote through descriptors of their own.
    std::fs::File::open(tmp.path())
        .and_then(|f| f.sync_all())
        .map_err(|e| failed("flush the copy for", e))?;
    let file = tmp.persist_noclobber(dest).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            exists(dest)
        } else {
            failed("write", e.error)
        }
    })?;
    if let Some(dir) = dest.parent() {
        sync_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        });
    }
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| failed("measure", e))
}

/// Makes a rename in `dir` durable (best effort: some filesystems refuse).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Creates the state directory 0700 if missing (the store tightens an
/// existing one when it opens the database in it).
fn private_dir(dir: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            CliError::new(
                Exit::Failed,
                format!("cannot create the state directory `{}`: {e}", dir.display()),
            )
        })
}

/// Moves the database at `db` (and its write-ahead log) to
/// `DB.before-restore-TIME`; drops its `-shm` index, which SQLite rebuilds.
fn move_aside(db: &Path) -> Result<Option<PathBuf>, CliError> {
    if db.symlink_metadata().is_err() {
        return Ok(None);
    }
    let aside = with_suffix(db, &format!(".before-restore-{}", utc_stamp()));
    let failed = |what: String, e: std::io::Error| {
        CliError::new(Exit::Failed, format!("cannot move {what} aside: {e}"))
    };
    std::fs::rename(db, &aside).map_err(|e| failed(format!("`{}`", db.display()), e))?;
    let wal = with_suffix(db, "-wal");
    if wal.symlink_metadata().is_ok() {
        std::fs::rename(&wal, with_suffix(&aside, "-wal"))
            .map_err(|e| failed(format!("`{}`", wal.display()), e))?;
    }
    match std::fs::remove_file(with_suffix(db, "-shm")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(format!("`{}-shm`", db.display()), e)),
    }
    Ok(Some(aside))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The URL without the password of its user info, and that password
/// (percent-decoded), for `PGPASSWORD`: a command line is readable by every
/// local user.
fn split_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before_query, query) = rest.split_at(query_start);
    let Some((userinfo, host)) = before_query.rsplit_once('@') else {
        return (url.to_owned(), None);
    };
    let Some((user, password)) = userinfo.split_once(':') else {
        return (url.to_owned(), None);
    };
    (
        format!("{scheme}://{user}@{host}{query}"),
        Some(percent_decode(password)),
    )
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Now in UTC as `20261206T063000Z`, for file names.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or_default());
    let rem = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let stamp = utc_stamp();
        assert_eq!(stamp.len(), 16, "{stamp}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T',
            "{stamp}"
        );
    }

    #[test]
    fn passwords_leave_the_url() {
        assert_eq!(
            split_password("postgres://alice:s3cr%2Ft@db.example:5432/hatoba?sslmode=require"),
            (
                "postgres://alice@db.example:5432/hatoba?sslmode=require".to_owned(),
                Some("s3cr/t".to_owned())
            )
        );
        assert_eq!(
            split_password("postgresql://bob:pa/ss@h/db"),
            ("postgresql://bob@h/db".to_owned(), Some("pa/ss".to_owned()))
        );
        assert_eq!(
            split_password("postgres://postgres@127.0.0.1:5432/db"),
            ("postgres://postgres@127.0.0.1:5432/db".to_owned(), None)
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
