//! A throw-away PostgreSQL for tests: Debian's binaries, a temporary data
//! directory, a free loopback port, a fresh database per caller.
//!
//! One cluster is shared by the tests of a binary that hold a
//! [`TempPostgres`] at the same time (initdb is the slow part); it stops when
//! the last one is dropped, panics included. A watchdog process also stops it
//! and removes its directory if the test binary dies without dropping it
//! (SIGKILL, Ctrl-C), so no `postgres` outlives the tests.
//!
//! PostgreSQL refuses to run as root: as root the server and `initdb` run as
//! the `postgres` user through `runuser`; otherwise they run directly.
//! This must never touch a PostgreSQL it did not start.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};

use crate::watchdog::Watchdog;
use crate::{external, free_port, wait_for};

/// How long the server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the server is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// Attempts at starting the server when its port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// Why no PostgreSQL could be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PostgresUnavailable {
    /// What went wrong, with the tail of the server's log where there is one.
    pub reason: String,
}

fn unavailable(reason: impl Into<String>) -> PostgresUnavailable {
    PostgresUnavailable {
        reason: reason.into(),
    }
}

/// A fresh, empty database on a temporary PostgreSQL cluster.
#[derive(Debug)]
pub struct TempPostgres {
    cluster: Arc<Cluster>,
    database: String,
}

/// A PostgreSQL for the calling test: `Some` when one could be started;
/// otherwise `SKIP`s (or fails under `HATOBA_REQUIRE_EXTERNAL=1`, see
/// [`external`]).
pub fn postgres() -> Option<TempPostgres> {
    external("PostgreSQL", TempPostgres::start())
}

impl TempPostgres {
    /// Starts (or joins) the temporary cluster and creates a fresh database.
    pub fn start() -> Result<TempPostgres, PostgresUnavailable> {
        static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
        static NEXT_DATABASE: AtomicU64 = AtomicU64::new(1);

        let cluster = {
            // Held while starting, so concurrent tests share one cluster.
            let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
            match shared.upgrade() {
                Some(cluster) => cluster,
                None => {
                    let cluster = Arc::new(Cluster::start()?);
                    *shared = Arc::downgrade(&cluster);
                    cluster
                }
            }
        };
        let database = format!(
            "hatoba_{}_{}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new(&cluster.binaries.createdb)
            .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string()])
            .args(["-U", "postgres", &database])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| unavailable(format!("cannot run createdb: {e}")))?;
        if !out.status.success() {
            return Err(unavailable(format!(
                "createdb {database} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(TempPostgres { cluster, database })
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE` for this caller's own
    /// database (trust authentication, no password).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.cluster.port, self.database
        )
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`, the cluster's
    /// maintenance database (shared with other tests: do not write to it).
    pub fn admin_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.cluster.port
        )
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.cluster.port
    }

    /// The name of this caller's database.
    pub fn database(&self) -> &str {
        &self.database
    }
}

/// The programs used, from Debian's newest `/usr/lib/postgresql/*/bin`, else
/// from PATH.
#[derive(Debug)]
struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
    pg_isready: PathBuf,
    createdb: PathBuf,
}

impl Binaries {
    fn find() -> Result<Binaries, PostgresUnavailable> {
        let debian = newest_debian_bin_dir();
        let find = |name: &str| {
            debian
                .as_ref()
                .map(|dir| dir.join(name))
                .filter(|path| path.is_file())
                .or_else(|| on_path(name))
                .ok_or_else(|| {
                    unavailable(format!(
                        "no `{name}` in /usr/lib/postgresql/*/bin or on PATH \
                         (install Debian's `postgresql` package)"
                    ))
                })
        };
        Ok(Binaries {
            initdb: find("initdb")?,
            postgres: find("postgres")?,
            pg_isready: find("pg_isready")?,
            createdb: find("createdb")?,
        })
    }
}

/// `/usr/lib/postgresql/<highest version>/bin`, if any holds `postgres`.
fn newest_debian_bin_dir() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            let version: Vec<u32> = name
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A running server and its directory.
#[derive(Debug)]
struct Cluster {
    binaries: Binaries,
    port: u16,
    /// `runuser` (as root) or `postgres` itself.
    server: Child,
    /// The postmaster's own pid, from `postmaster.pid`.
    postmaster: Pid,
    /// Stops the server if this process dies: SIGINT (PostgreSQL's fast
    /// shutdown), SIGKILL after 30 s.
    watchdog: Watchdog,
    /// Removed when the cluster drops, after the server has stopped.
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Result<Cluster, PostgresUnavailable> {
        let binaries = Binaries::find()?;
        let dir = tempfile::Builder::new()
            .prefix("hatoba-pg-")
            .tempdir()
            .map_err(|e| unavailable(format!("cannot make a temporary directory: {e}")))?;
        let run_as = if geteuid().is_root() {
            let user = User::from_name("postgres").ok().flatten().ok_or_else(|| {
                unavailable("running as root and there is no `postgres` user to run PostgreSQL as")
            })?;
            std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .map_err(|e| {
                    unavailable(format!("cannot give the data directory to `postgres`: {e}"))
                })?;
            Some("postgres")
        } else {
            None
        };
        let command = |program: &Path| match run_as {
            Some(user) => {
                let mut c =
                    Command::new(on_path("runuser").unwrap_or_else(|| "/usr/sbin/runuser".into()));
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };

        let data = dir.path().join("data");
        let out = command(&binaries.initdb)
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| unavailable(format!("cannot run initdb: {e}")))?;
        if !out.status.success() {
            return Err(unavailable(format!(
                "initdb failed: {}",
                tail(&String::from_utf8_lossy(&out.stderr))
            )));
        }

        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port().map_err(|e| unavailable(format!("no free port: {e}")))?;
            let log_path = dir.path().join(format!("postgres-{port}.log"));
            let log = File::create(&log_path)
                .map_err(|e| unavailable(format!("cannot create the server log: {e}")))?;
            let log_err = log
                .try_clone()
                .map_err(|e| unavailable(format!("cannot share the server log: {e}")))?;
            let mut server = command(&binaries.postgres)
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string()])
                .arg("-k")
                .arg(dir.path())
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| unavailable(format!("cannot start postgres: {e}")))?;

            let mut exited = false;
            let ready = wait_for(START_DEADLINE, || {
                if matches!(server.try_wait(), Ok(Some(_))) {
                    exited = true;
                    return true;
                }
                accepts_connections(&binaries, port)
            });
            let log_text = read_lossy(&log_path);
            if ready.is_err() {
                let _ = server.kill();
                let _ = server.wait();
                return Err(unavailable(format!(
                    "postgres did not accept connections within {START_DEADLINE:?}: {}",
                    tail(&log_text)
                )));
            }
            if exited {
                if log_text.contains("could not bind") || log_text.contains("already in use") {
                    last_failure = tail(&log_text);
                    continue; // someone took the port meanwhile
                }
                return Err(unavailable(format!("postgres exited: {}", tail(&log_text))));
            }

            let postmaster = read_postmaster_pid(&data)
                .unwrap_or_else(|| Pid::from_raw(i32::try_from(server.id()).unwrap_or(i32::MAX)));
            let watchdog = Watchdog::spawn(
                "hatoba-postgres-watchdog",
                u32::try_from(postmaster.as_raw()).unwrap_or(0),
                "INT",
                300,
                dir.path(),
            )
            .map_err(|e| unavailable(format!("cannot start the watchdog: {e}")))?;
            return Ok(Cluster {
                binaries,
                port,
                server,
                postmaster,
                watchdog,
                _dir: dir,
            });
        }
        Err(unavailable(format!(
            "postgres found no free port in {PORT_ATTEMPTS} attempts: {last_failure}"
        )))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.watchdog.disarm();
        // SIGINT is PostgreSQL's fast shutdown: backends are ended, no waiting for clients.
        let _ = kill(self.postmaster, Signal::SIGINT);
        let stopped = wait_for(STOP_DEADLINE, || {
            matches!(self.server.try_wait(), Ok(Some(_)))
        });
        if stopped.is_err() {
            let _ = kill(self.postmaster, Signal::SIGKILL);
            let _ = self.server.kill();
            let _ = self.server.wait();
        }
    }
}

fn accepts_connections(binaries: &Binaries, port: u16) -> bool {
    Command::new(&binaries.pg_isready)
        .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-t", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn read_postmaster_pid(data: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    Some(Pid::from_raw(pid))
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last few lines of a log, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}
