//! Opening a store: SQLite from a path, PostgreSQL from a URL, both as one
//! `AnyPool` with the same migrations applied; closing the SQLite writer
//! cleanly; checking a copy before it replaces a database.
//!
//! SQLite files are checked (`quick_check`) before anything writes into
//! them and kept private: the database and its `-wal`/`-shm` files 0600,
//! their directory 0700, set after every open whatever the umask was.
//!
//! SQLite connections get their pragmas in `after_connect` (WAL,
//! `synchronous=FULL`, a busy timeout, foreign keys), because the `Any`
//! driver only takes a URL. Locations in errors are redacted: a PostgreSQL
//! password must never reach a message or a log.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{ConnectOptions, Connection, Row};

use crate::{SqlStore, StoreError};

/// Which database a [`SqlStore`] talks to. The SQL is the same for both;
/// only how a write transaction begins differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file (the default, one server).
    Sqlite,
    /// A PostgreSQL database (several servers).
    Postgres,
}

/// Set on every SQLite connection. `journal_mode` is stored in the file, the
/// others are per connection. `busy_timeout` (how long a writer waits for
/// another writer's lock before failing, 15 s) comes first so that switching
/// to WAL waits for other connections instead of failing.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 15000; \
     PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON;";

const SQLITE_MAX_CONNECTIONS: u32 = 8;
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

impl SqlStore {
    /// Opens (creating it and its parent directories if needed) the SQLite
    /// database at `path` and brings its schema up to date.
    ///
    /// The file, its `-wal` and `-shm` files are made 0600 and its directory
    /// 0700, before and after opening, whatever they were (a pre-existing
    /// 0644 file is tightened). A database that fails SQLite's
    /// `quick_check` is refused with [`StoreError::Damaged`] before anything
    /// is written into it.
    pub async fn open_sqlite(path: impl AsRef<Path>) -> Result<SqlStore, StoreError> {
        let path = path.as_ref();
        let location = path.display().to_string();
        let open_error = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        let path = std::path::absolute(path).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        if let Some(parent) = path.parent() {
            private_dir(parent).map_err(|(e, at)| match e {
                Tighten::Io(source) => open_error(sqlx::Error::Io(source)),
                Tighten::Chmod(source) => permissions_error(at, PRIVATE_DIR, source),
            })?;
        }
        create_private_file(&path).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        tighten_database_files(&path)?;
        let options = sqlite_options(&path, "rwc").map_err(open_error)?;

        sqlx::any::install_default_drivers();
        check_sqlite(&options, &location).await?;
        let pool = AnyPoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .after_release(|conn, _meta| {
                // A connection still in a transaction when it comes back
                // (a COMMIT and its ROLLBACK both failed after SQLite had
                // rolled back by itself, as on a full disk) would refuse
                // every later BEGIN: closed, and a fresh one opened.
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::raw_sql(SQLITE_PRAGMAS).execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(open_error)?;
        let store = SqlStore::migrated(pool, Backend::Sqlite, location).await?;
        // SQLite has created the -wal and -shm files by now (with the
        // database file's mode); check them again all the same.
        if let Err(e) = tighten_database_files(&path) {
            store.pool.close().await;
            return Err(e);
        }
        Ok(store)
    }

    /// Checks the SQLite file at `path`, a copy about to replace a state
    /// directory's database, without migrating it: it must pass
    /// `quick_check` ([`StoreError::Damaged`]) and hold a Hatoba history,
    /// with no migration marked failed ([`StoreError::NotHistory`]).
    /// Returns how many deployments it holds. Whether its migrations are
    /// ones this Hatoba knows is checked by opening it with
    /// [`SqlStore::open_sqlite`] afterwards.
    pub async fn check_sqlite_copy(path: impl AsRef<Path>) -> Result<u64, StoreError> {
        let path = path.as_ref();
        let location = path.display().to_string();
        let open_error = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        let path = std::path::absolute(path).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        let options = sqlite_options(&path, "rw").map_err(open_error)?;
        sqlx::any::install_default_drivers();
        check_sqlite(&options, &location).await?;
        let mut conn = options.connect().await.map_err(open_error)?;
        let result = history_facts(&mut conn, &location).await;
        let _ = conn.close().await;
        result
    }

    /// Connects to the PostgreSQL database at `url`
    /// (`postgres://user:password@host:port/database`) and brings its schema
    /// up to date.
    pub async fn connect_postgres(url: &str) -> Result<SqlStore, StoreError> {
        let location = redact_url(url);
        let open_error = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(open_error(sqlx::Error::Configuration(
                "expected a `postgres://` or `postgresql://` URL".into(),
            )));
        }
        let options = AnyConnectOptions::from_str(url).map_err(open_error)?;

        sqlx::any::install_default_drivers();
        let conn = options.connect().await.map_err(open_error)?;
        conn.close().await.map_err(open_error)?;
        let pool = AnyPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(open_error)?;
        SqlStore::migrated(pool, Backend::Postgres, location).await
    }

    async fn migrated(
        pool: sqlx::AnyPool,
        backend: Backend,
        location: String,
    ) -> Result<SqlStore, StoreError> {
        if let Err(source) = sqlx::migrate!("./migrations").run(&pool).await {
            pool.close().await;
            return Err(StoreError::Migrate { location, source });
        }
        Ok(SqlStore {
            pool,
            backend,
            location,
        })
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The SQLite path or the PostgreSQL URL, password redacted.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Closes every connection; later calls fail. Waits for checked-out
    /// connections to come back. Readers close with this; the one writer
    /// closes with [`SqlStore::close_checkpointed`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Moves everything in SQLite's write-ahead log into the database file
    /// and empties the log (`PRAGMA wal_checkpoint(TRUNCATE)`), so the
    /// `.db` file alone holds the whole history. Waits (up to the busy
    /// timeout) for readers of older snapshots; [`StoreError::CheckpointBusy`]
    /// when one still reads. Nothing to do on PostgreSQL.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.backend != Backend::Sqlite {
            return Ok(());
        }
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(StoreError::db(CHECKPOINTING))?;
        truncate_wal(&mut conn, &self.location).await
    }

    /// [`SqlStore::checkpoint`] on the SQLite file at `path` through a
    /// connection of its own, for a process that holds the store only as a
    /// `dyn Store` (`hatoba up` at its end). Does not create the file, nor
    /// check or migrate it.
    pub async fn checkpoint_sqlite_file(path: impl AsRef<Path>) -> Result<(), StoreError> {
        let path = path.as_ref();
        let location = path.display().to_string();
        let open_error = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        let path = std::path::absolute(path).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        let options = sqlite_options(&path, "rw").map_err(open_error)?;
        sqlx::any::install_default_drivers();
        let mut conn = options.connect().await.map_err(open_error)?;
        let result = async {
            sqlx::raw_sql(SQLITE_PRAGMAS)
                .execute(&mut conn)
                .await
                .map_err(StoreError::db(CHECKPOINTING))?;
            truncate_wal(&mut conn, &location).await
        }
        .await;
        let _ = conn.close().await;
        result
    }

    /// Writes a consistent copy of the SQLite database into `to` (`VACUUM
    /// INTO`: one read transaction, so it may run while the server writes).
    /// `to` must not exist or be an empty file. Not for PostgreSQL (use
    /// `pg_dump`): [`StoreError::Database`] there.
    pub async fn vacuum_into(&self, to: &Path) -> Result<(), StoreError> {
        const DOING: &str = "copying the database";
        if self.backend != Backend::Sqlite {
            return Err(StoreError::Database {
                doing: DOING,
                source: sqlx::Error::Configuration(
                    "VACUUM INTO is SQLite's; copy PostgreSQL with pg_dump".into(),
                ),
            });
        }
        let Some(to) = to.to_str() else {
            return Err(StoreError::Database {
                doing: DOING,
                source: sqlx::Error::Configuration("the path is not valid UTF-8".into()),
            });
        };
        sqlx::query("VACUUM INTO $1")
            .bind(to)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db(DOING))?;
        Ok(())
    }

    /// The clean close of the writer (`hatoba up` at its end):
    /// [`SqlStore::checkpoint`], then [`SqlStore::close`]. The connections
    /// are closed also when the checkpoint fails.
    pub async fn close_checkpointed(&self) -> Result<(), StoreError> {
        let checkpointed = self.checkpoint().await;
        self.pool.close().await;
        checkpointed
    }
}

const CHECKPOINTING: &str = "checkpointing the write-ahead log";

/// `PRAGMA wal_checkpoint(TRUNCATE)` on `conn`; its first column says
/// whether a reader kept it from finishing.
async fn truncate_wal(conn: &mut sqlx::AnyConnection, location: &str) -> Result<(), StoreError> {
    let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::db(CHECKPOINTING))?;
    let busy: i64 = row.try_get(0).map_err(StoreError::db(CHECKPOINTING))?;
    if busy != 0 {
        return Err(StoreError::CheckpointBusy {
            location: location.to_owned(),
        });
    }
    Ok(())
}

/// Mode of the database file and its `-wal` and `-shm` files.
const PRIVATE_FILE: u32 = 0o600;
/// Mode of the directory that holds them.
const PRIVATE_DIR: u32 = 0o700;

fn sqlite_options(path: &Path, mode: &str) -> Result<AnyConnectOptions, sqlx::Error> {
    let Some(text) = path.to_str() else {
        return Err(sqlx::Error::Configuration(
            "the path is not valid UTF-8".into(),
        ));
    };
    AnyConnectOptions::from_str(&format!("sqlite://{}?mode={mode}", escape_path(text)))
}

/// Why a file or directory could not be made private.
enum Tighten {
    /// It could not be created or looked at.
    Io(std::io::Error),
    /// Its mode could not be changed.
    Chmod(std::io::Error),
}

fn permissions_error(path: PathBuf, mode: u32, source: std::io::Error) -> StoreError {
    StoreError::Permissions {
        path: path.display().to_string(),
        mode,
        source,
    }
}

/// Creates `dir` (and its parents) mode 0700 if missing, and takes the
/// group's and others' bits off it if present.
fn private_dir(dir: &Path) -> Result<(), (Tighten, PathBuf)> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(|e| (Tighten::Io(e), dir.to_owned()))?;
    tighten(dir, PRIVATE_DIR).map_err(|e| (e, dir.to_owned()))
}

/// Takes every bit that `keep` lacks off `path`'s mode (a 0644 file kept to
/// 0600 becomes 0600, a 0400 one stays 0400); `umask` plays no part.
fn tighten(path: &Path, keep: u32) -> Result<(), Tighten> {
    let mode = std::fs::metadata(path)
        .map_err(Tighten::Io)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & !keep != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & keep))
            .map_err(Tighten::Chmod)?;
    }
    Ok(())
}

/// Creates an empty database file mode 0600 if there is none, so SQLite
/// (which would create it 0644 less the umask) opens a private file.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(path)
    {
        // Exactly 0600 whatever the umask took off.
        Ok(_) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_FILE)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes the database file and, where they exist, its `-wal` and `-shm`
/// files private to their owner.
fn tighten_database_files(path: &Path) -> Result<(), StoreError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        match tighten(&file, PRIVATE_FILE) {
            Ok(()) => {}
            Err(Tighten::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(Tighten::Io(e) | Tighten::Chmod(e)) => {
                return Err(permissions_error(file, PRIVATE_FILE, e));
            }
        }
    }
    Ok(())
}

/// Opens one connection outside the pool, sets it up as the pool would and
/// runs SQLite's `quick_check` on the file.
///
/// The pool retries a refused connection and any `after_connect` failure
/// until its acquire timeout and then reports only "timed out", so without
/// this a file that is not a database would take 30 s to give a useless
/// error. A damaged page is found here, before the migrations or the
/// controller write into the file (and spread the damage).
async fn check_sqlite(options: &AnyConnectOptions, location: &str) -> Result<(), StoreError> {
    let classify = |source: sqlx::Error| {
        if is_corruption(&source) {
            StoreError::Damaged {
                location: location.to_owned(),
                problem: "SQLite cannot read it".to_owned(),
                source: Some(source),
            }
        } else {
            StoreError::Open {
                location: location.to_owned(),
                source,
            }
        }
    };
    let mut conn = options.connect().await.map_err(classify)?;
    let checked = async {
        sqlx::raw_sql(SQLITE_PRAGMAS).execute(&mut conn).await?;
        let rows = sqlx::query(QUICK_CHECK).fetch_all(&mut conn).await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<Vec<String>, _>>()
    }
    .await;
    let _ = conn.close().await;
    let lines = checked.map_err(classify)?;
    if lines.len() == 1 && lines[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::Damaged {
        location: location.to_owned(),
        problem: if lines.is_empty() {
            "its integrity check answered nothing".to_owned()
        } else {
            lines.join("; ")
        },
        source: None,
    })
}

/// SQLite's integrity check without the index-content cross-check (O(size),
/// seconds for a large history), stopping at 3 problems.
const QUICK_CHECK: &str = "PRAGMA quick_check(3)";

/// SQLITE_CORRUPT and its extended codes (`database disk image is
/// malformed`).
fn is_corruption(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|code| code.parse::<i64>().ok())
        .is_some_and(|code| code & 0xff == 11)
}

/// How many deployments a checked copy holds, once it is known to carry
/// the store's migrations table with no failed migration.
async fn history_facts(conn: &mut sqlx::AnyConnection, location: &str) -> Result<u64, StoreError> {
    let not_history = |reason: &str| StoreError::NotHistory {
        location: location.to_owned(),
        reason: reason.to_owned(),
    };
    let db = |source| StoreError::Open {
        location: location.to_owned(),
        source,
    };
    let tables: Vec<String> =
        sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(db)?;
    for table in ["_sqlx_migrations", "deployments"] {
        if !tables.iter().any(|t| t == table) {
            return Err(not_history(&format!("it has no `{table}` table")));
        }
    }
    let failed: i64 = sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 0")
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db)?;
    if failed != 0 {
        return Err(not_history(
            "a migration of its schema failed half-way (`_sqlx_migrations.success` is false)",
        ));
    }
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM deployments")
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db)?;
    Ok(u64::try_from(count).unwrap_or_default())
}

/// Escapes what SQLite's URL parsing would take for syntax (it decodes
/// `%XX` in the path).
fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            _ => out.push(c),
        }
    }
    out
}

/// The URL with the password (in the user info or a `password=` query
/// parameter) replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a database URL that is not of the form scheme://...)".to_owned();
    };
    let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before_query, query) = rest.split_at(query_start);
    let before_query = match before_query.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => before_query.to_owned(),
    };
    let query = query
        .split_inclusive(['?', '&', '#'])
        .map(|part| {
            if part.starts_with("password=") {
                let end = if part.ends_with(['&', '#']) {
                    &part[part.len() - 1..]
                } else {
                    ""
                };
                format!("password=***{end}")
            } else {
                part.to_owned()
            }
        })
        .collect::<String>();
    format!("{scheme}://{before_query}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        for (url, expected) in [
            (
                "postgres://postgres@127.0.0.1:5432/db",
                "postgres://postgres@127.0.0.1:5432/db",
            ),
            (
                "postgres://alice:s3cr%2Ft@db.example:5432/hatoba?sslmode=require",
                "postgres://alice:***@db.example:5432/hatoba?sslmode=require",
            ),
            ("postgresql://bob:pa/ss@h/db", "postgresql://bob:***@h/db"),
            (
                "postgres://h/db?user=x&password=hunter2&sslmode=disable",
                "postgres://h/db?user=x&password=***&sslmode=disable",
            ),
            (
                "postgres://h/db?password=hunter2",
                "postgres://h/db?password=***",
            ),
            (
                "hunter2",
                "(a database URL that is not of the form scheme://...)",
            ),
        ] {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn path_escaping() {
        assert_eq!(
            escape_path("/tmp/a b/x?y#z%.db"),
            "/tmp/a b/x%3Fy%23z%25.db"
        );
    }
}
