//! Opening a store: SQLite from a path, PostgreSQL from a URL, both as one
//! `AnyPool` with the same migrations applied.
//!
//! SQLite connections get their pragmas in `after_connect` (WAL,
//! `synchronous=FULL`, a busy timeout, foreign keys), because the `Any`
//! driver only takes a URL. Locations in errors are redacted: a PostgreSQL
//! password must never reach a message or a log.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{ConnectOptions, Connection};

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
    pub async fn open_sqlite(path: impl AsRef<Path>) -> Result<SqlStore, StoreError> {
        let path = path.as_ref();
        let location = path.display().to_string();
        let open_error = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        let path = std::path::absolute(path).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| open_error(sqlx::Error::Io(e)))?;
        }
        let Some(text) = path.to_str() else {
            return Err(open_error(sqlx::Error::Configuration(
                "the path is not valid UTF-8".into(),
            )));
        };
        let url = format!("sqlite://{}?mode=rwc", escape_path(text));
        let options = AnyConnectOptions::from_str(&url).map_err(open_error)?;

        sqlx::any::install_default_drivers();
        probe(&options, Backend::Sqlite).await.map_err(open_error)?;
        let pool = AnyPoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::raw_sql(SQLITE_PRAGMAS).execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(open_error)?;
        SqlStore::migrated(pool, Backend::Sqlite, location).await
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
        probe(&options, Backend::Postgres)
            .await
            .map_err(open_error)?;
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
    /// connections to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Opens one connection outside the pool and sets it up as the pool would.
///
/// The pool retries a refused connection and any `after_connect` failure
/// until its acquire timeout and then reports only "timed out", so without
/// this a wrong port or a file that is not a database would take 30 s to
/// give a useless error.
async fn probe(options: &AnyConnectOptions, backend: Backend) -> Result<(), sqlx::Error> {
    let mut conn = options.connect().await?;
    if backend == Backend::Sqlite {
        sqlx::raw_sql(SQLITE_PRAGMAS).execute(&mut conn).await?;
    }
    conn.close().await
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
