//! The data plane as its own process: `hatoba dataplane` serves the route
//! tables that `hatoba up` pushes over `STATE_DIR/dataplane.sock`, keeps
//! them in `STATE_DIR/dataplane.json`, and serves its traffic metrics on a
//! loopback admin port written to `STATE_DIR/dataplane.admin`.
//!
//! Why a process of its own: users' traffic must not depend on the
//! controller being alive. A `kill -9` of `hatoba up` leaves this process
//! serving the last tables (the canary split frozen where it was); the next
//! `hatoba up` finds it on the socket and drives it again.
//!
//! `hatoba up` starts it when no data plane answers on the socket
//! ([`ensure`]) and starts it again if it dies ([`supervise`]); a restarted
//! data plane serves its saved tables at once, on the very listening
//! sockets the dead one had: `hatoba up` keeps a duplicate of each
//! ([`keep_sockets`], `hatoba_proxy::handover`) and hands them over on
//! `STATE_DIR/dataplane.keeper.sock`, so the connections that arrive while
//! no data plane runs wait in the kernel's backlog instead of being
//! refused.

use crate::exit::{CliError, Exit};
use crate::output;
use hatoba_proxy::control::{ControlClient, ControlError, DataPlane, DataPlaneConfig};
use hatoba_proxy::handover::{Keeper, KeeperServer};
use hatoba_proxy::{AdminServer, ProxyOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a starting data plane may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How often `hatoba up` checks that its data plane answers.
const SUPERVISE_EVERY: Duration = Duration::from_millis(250);
/// How often a data plane checks that it can still be found ([`unreachable`]).
const FINDABLE_EVERY: Duration = Duration::from_secs(1);

/// Resolves when the watching connection ends (never without one).
async fn ended(watch: Option<&mut tokio::net::UnixStream>) {
    use tokio::io::AsyncReadExt as _;
    let Some(stream) = watch else {
        return std::future::pending().await;
    };
    let mut buf = [0u8; 64];
    // The data plane sends nothing unasked: anything read is dropped.
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// The data plane process is not there at all (as opposed to slow).
fn is_gone(e: &ControlError) -> bool {
    match e {
        ControlError::Unreachable { source, .. } | ControlError::Disconnected { source, .. } => {
            matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            )
        }
        _ => false,
    }
}

pub(crate) fn socket_path(state: &Path) -> PathBuf {
    state.join("dataplane.sock")
}

fn state_file(state: &Path) -> PathBuf {
    state.join("dataplane.json")
}

fn admin_file(state: &Path) -> PathBuf {
    state.join("dataplane.admin")
}

fn log_file(state: &Path) -> PathBuf {
    state.join("dataplane.log")
}

/// `hatoba dataplane`: runs until SIGTERM, SIGINT or a `shutdown` request.
pub(crate) fn run(state: &Path, metrics: std::net::SocketAddr) -> anyhow::Result<Exit> {
    crate::state_dir::prepare(state)?;
    crate::state_dir::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Detached from any terminal: a hang-up means nothing here.
        let mut hup = signal(SignalKind::hangup())?;
        let plane = DataPlane::bind(DataPlaneConfig {
            socket: socket_path(state),
            state_file: state_file(state),
            options: ProxyOptions::default(),
            threads: 0,
        })
        .await
        .map_err(|e| {
            let exit = if matches!(e, ControlError::AlreadyRunning { .. }) {
                Exit::Conflict
            } else {
                Exit::Failed
            };
            CliError::new(exit, crate::server_cmd::chain(&e))
        })?;
        let admin = AdminServer::start(metrics, plane.recorder(), Vec::new()).map_err(|e| {
            CliError::new(
                Exit::Failed,
                format!("cannot serve the traffic metrics on {metrics}: {e}"),
            )
        })?;
        std::fs::write(admin_file(state), admin.local_addr().to_string())?;
        output::stderr(&format!(
            "data plane on {} (pid {}), metrics on http://{}/metrics\n",
            plane.socket().display(),
            std::process::id(),
            admin.local_addr()
        ));
        let taken = plane.taken_over();
        for (service, n) in &taken.adopted {
            output::stderr(&format!(
                "service `{service}`: accepting on the {n} listening sockets `hatoba up` kept\n"
            ));
        }
        for why in &taken.missed {
            output::stderr(&format!("new listening sockets: {why}\n"));
        }
        let bound = socket_identity(plane.socket());
        let socket = plane.socket().to_path_buf();
        let mut lost = None;
        let stop = async {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {}
                    why = unreachable(&socket, bound) => {
                        lost = Some(why);
                        break;
                    }
                }
            }
        };
        plane
            .run(stop)
            .await
            .map_err(|e| CliError::new(Exit::Failed, crate::server_cmd::chain(&e)))?;
        admin.shutdown();
        let _ = std::fs::remove_file(admin_file(state));
        if let Some(why) = lost {
            return Err(CliError::new(
                Exit::Failed,
                format!("the data plane stopped: its control socket {why}"),
            )
            .hint("nobody could reach it to change its routes or stop it; `hatoba up` starts a new one")
            .into());
        }
        Ok(Exit::Ok)
    })
}

/// The device and inode of the socket file at `path`, if there is one.
fn socket_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// The safety net of an orphaned data plane: resolves, with why, once the
/// socket file this process bound (`bound`, its device and inode) is gone
/// from `socket` or replaced by another file; checked every
/// [`FINDABLE_EVERY`].
///
/// A data plane is found only through that file: `hatoba up` connects there
/// to push routes, to ask for metrics and to stop it. Once it is removed
/// (the state directory deleted, say, after a test or by an operator
/// cleaning up) no controller can ever reach this process again, yet it
/// would keep its listening ports until the machine restarts. So it stops
/// by itself, within a second or two, as after a SIGTERM (requests in
/// flight finish). The routes file `dataplane.json` is not looked at: a
/// data plane without saved routes is still reachable and still wanted.
async fn unreachable(socket: &Path, bound: Option<(u64, u64)>) -> String {
    use std::os::unix::fs::MetadataExt as _;
    // Never known (the file could not be read right after binding it): no
    // way to tell, so no stopping on a guess.
    let Some(bound) = bound else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(FINDABLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match std::fs::symlink_metadata(socket) {
            Ok(m) if (m.dev(), m.ino()) == bound => {}
            Ok(_) => return format!("{} is another file now", socket.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return format!("{} was removed", socket.display());
            }
            // Unreadable for a moment (permissions, a full table): not a
            // sign that it is gone.
            Err(_) => {}
        }
    }
}

/// A data plane to drive.
pub(crate) struct Connected {
    pub(crate) client: ControlClient,
    /// Its metrics address.
    pub(crate) admin: String,
    /// Whether this call started it (else it was already serving).
    pub(crate) started: bool,
}

/// Connects to the data plane of this state directory, starting one when
/// none answers.
pub(crate) async fn ensure(
    state: &Path,
    metrics: Option<std::net::SocketAddr>,
) -> anyhow::Result<Connected> {
    let socket = socket_path(state);
    if let Ok(c) = ControlClient::connect(&socket).await
        && c.hello().await.is_ok()
    {
        return Ok(Connected {
            client: c,
            admin: admin_addr(state),
            started: false,
        });
    }
    let exe = std::env::current_exe()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file(state))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--state-dir")
        .arg(state)
        .arg("dataplane")
        .args(metrics.map(|m| format!("--metrics={m}")))
        // The data plane needs no secret key.
        .env_remove(hatoba_server::secrets::KEY_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    // Its own process group: a Ctrl-C on `hatoba up`'s terminal or a kill
    // of its group does not reach the users' traffic.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::new(Exit::Failed, format!("cannot start the data plane: {e}")))?;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(c) = ControlClient::connect(&socket).await
            && c.hello().await.is_ok()
        {
            // Reaped by whoever adopts it once this process is gone; while
            // this process lives, a thread waits for it so it never lingers
            // as a zombie.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            return Ok(Connected {
                client: c,
                admin: admin_addr(state),
                started: true,
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(log_file(state)).unwrap_or_default();
            let last = tail.lines().last().unwrap_or("").to_owned();
            return Err(CliError::new(
                Exit::Failed,
                format!("the data plane exited at start ({status}): {last}"),
            )
            .hint(format!("its log: {}", log_file(state).display()))
            .into());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(CliError::new(
                Exit::Failed,
                format!(
                    "the data plane did not answer on {} within {}s",
                    socket.display(),
                    START_TIMEOUT.as_secs()
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts keeping duplicates of the listening sockets of the data plane
/// behind `client`, served to a restarted one on
/// `STATE_DIR/dataplane.keeper.sock` while the returned server lives. A
/// data plane that cannot hand them over (an older protocol) or a socket
/// that cannot be served is said in the log; its traffic is served all the
/// same, only a crash of it would refuse connections until its restart.
pub(crate) async fn keep_sockets(
    state: &Path,
    client: &ControlClient,
) -> (Arc<Keeper>, Option<KeeperServer>) {
    let keeper = Keeper::new();
    let path = hatoba_proxy::handover::keeper_path(&socket_path(state));
    let server = match keeper.serve(&path).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(
                "cannot hand the listening sockets to a restarted data plane: {}",
                crate::server_cmd::chain(&e)
            );
            None
        }
    };
    if let Err(e) = keeper.refresh(client).await {
        tracing::warn!(
            "cannot keep the data plane's listening sockets: {}",
            crate::server_cmd::chain(&e)
        );
    }
    (keeper, server)
}

pub(crate) fn admin_addr(state: &Path) -> String {
    std::fs::read_to_string(admin_file(state))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Checks the data plane every 250 ms, and at once when an idle watching
/// connection to it ends; starts it again at once when its process is gone
/// (nothing listens on the socket), or after two checks without an answer.
/// A restarted data plane serves its saved tables at once, on the sockets
/// `keeper` held (then taken from it again); a restart that fails lets go
/// of them, so clients are refused rather than left waiting in a backlog
/// nobody serves.
pub(crate) async fn supervise(
    state: PathBuf,
    client: ControlClient,
    metrics: Option<std::net::SocketAddr>,
    keeper: Arc<Keeper>,
) {
    let mut tick = tokio::time::interval(SUPERVISE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut misses = 0u32;
    let mut failures = 0u32;
    let mut retry_at = tokio::time::Instant::now();
    // A connection that only waits: the kernel ends it the moment the data
    // plane's process does, so a crash is seen at once, not at a tick.
    let mut watch: Option<tokio::net::UnixStream> = None;
    loop {
        if watch.is_none() {
            watch = tokio::net::UnixStream::connect(socket_path(&state))
                .await
                .ok();
        }
        tokio::select! {
            _ = tick.tick() => {}
            () = ended(watch.as_mut()) => watch = None,
        }
        match client.hello().await {
            Ok(_) => {
                misses = 0;
                continue;
            }
            // Nobody listens on the socket: the process is gone, and every
            // moment until the next one starts refuses users' connections.
            Err(e) if is_gone(&e) => {}
            // Slow to answer is not dead: only twice in a row.
            Err(_) => {
                misses += 1;
                if misses < 2 {
                    continue;
                }
            }
        }
        if tokio::time::Instant::now() < retry_at {
            continue;
        }
        tracing::warn!("the data plane stopped answering: starting it again");
        match ensure(&state, metrics).await {
            Ok(c) => {
                misses = 0;
                failures = 0;
                if let Err(e) = keeper.refresh(&c.client).await {
                    tracing::warn!(
                        "cannot keep the restarted data plane's listening sockets: {}",
                        crate::server_cmd::chain(&e)
                    );
                }
                if let Err(e) = crate::server_cmd::advertise_admin(&state, &c.admin) {
                    tracing::error!(
                        "cannot write the data plane's new metrics address into server.json: {e:#}"
                    );
                }
            }
            Err(e) => {
                keeper.clear();
                // A start that fails (the state directory removed, the
                // metrics port taken) is tried again with back-off, not
                // four times a second for ever.
                failures = failures.saturating_add(1);
                let pause = (SUPERVISE_EVERY * 2u32.saturating_pow(failures.min(6)))
                    .min(Duration::from_secs(10));
                retry_at = tokio::time::Instant::now() + pause;
                tracing::error!(
                    "cannot restart the data plane: {e:#} (trying again in {}s)",
                    pause.as_secs_f64()
                );
            }
        }
    }
}
