//! The data plane as its own process, driven by the controller over a Unix
//! socket: the control server ([`DataPlane`], run inside the proxy process)
//! and its client ([`ControlClient`], used by the controller).
//!
//! Over 800 lines, not yet split: the protocol's types, the server side and
//! the client side are in one file so one version of the protocol is read
//! in one place. The next split is the wire types (`PROTOCOL`, requests,
//! replies) into their own module, then server and client apart.
//!
//! # Why a separate process
//!
//! Users' traffic must not depend on the controller being alive. The
//! controller (`hatoba up`) runs deployments, talks to runtimes and the
//! store, and may crash, be upgraded or be killed with SIGKILL; none of that
//! may drop a single user request. So the listeners live in their own
//! process that only routes, measures and remembers its last route table;
//! the controller tells it what to do and, when it comes back, asks what it
//! is doing ([`Request::Snapshot`]) and re-syncs. The listening sockets
//! are not handed over from a dying process (a SIGKILLed one hands nothing
//! over); instead the controller keeps a duplicate of each while both run
//! ([`crate::handover`]), so a data plane that dies leaves its sockets
//! open, queuing connections, and the restarted one accepts on them.
//!
//! The data plane also outlives itself: every change is written to a state
//! file (atomically: a temporary file in the same directory, fsync, rename)
//! *before* it is acknowledged, and a data plane started on an existing state
//! file listens again and serves the last tables at once, before the
//! controller says anything.
//!
//! # Protocol
//!
//! JSON lines over a Unix stream socket (mode 0600, set before it accepts
//! anyone): each request is one line, each reply one line. Requests on one
//! connection are answered in order; any number of connections may be open.
//! Every request is idempotent, so a client may resend one after a broken
//! connection.
//!
//! ```text
//! → {"op":"hello"}
//! ← {"reply":"hello","pid":4242,"protocol":3,"services":["web"]}
//! → {"op":"listen","service":"web","addr":"127.0.0.1:8080"}
//! ← {"reply":"listening","addr":"127.0.0.1:8080"}
//! → {"op":"update","route":{"service":"web","sticky":false,"groups":[
//!     {"role":"stable","version":"v1","weight":100,"backends":["127.0.0.1:9001"]}]}}
//! ← {"reply":"ok"}
//! → {"op":"drained","addr":"127.0.0.1:9001","timeout_ms":30000}
//! ← {"reply":"drained","done":true,"open":12,"left":0}
//! → {"op":"window","service":"web","version":"v1","window":"1m"}
//! ← {"reply":"window","stats":{"window":"1m","start_ms":…,"latency_buckets":[[3,120]],…}}
//! → {"op":"totals","service":"web","version":"v1"}
//! ← {"reply":"totals","totals":{"judged":1200,"against":3,"latency_buckets":[[3,1200]],"long_lived_open":2,"long_lived_abnormal":0}}
//! → {"op":"snapshot"}
//! ← {"reply":"snapshot","state":{"services":{"web":{"listen":"127.0.0.1:8080","route":{…}}}}}
//! → {"op":"close","service":"old"}
//! ← {"reply":"ok"}
//! → {"op":"retention","metrics_ms":3600000}
//! ← {"reply":"ok"}
//! → {"op":"sockets","service":"web","protocol":3}
//! ← {"reply":"sockets","service":"web","addr":"127.0.0.1:8080","count":2}  + 2 descriptors
//! → {"op":"shutdown"}
//! ← {"reply":"ok"}
//! ```
//!
//! - `listen` starts the service's listener, or keeps it when it already
//!   listens there (port 0 matches the port it got), or moves it to the new
//!   address (the old listener stops gracefully). The reply says where it
//!   listens. A bind failure is an error naming the address and the OS
//!   error; nothing changes. A new service starts with an empty table
//!   (answers 503) until its first `update`. Two services may not share a
//!   port (listeners use `SO_REUSEPORT`, so the kernel would not refuse the
//!   second: it would split the traffic between them).
//! - `update` replaces a listening service's table; an invalid route is an
//!   error and the old table keeps serving.
//! - `close` stops a service's listener (gracefully: its connections finish
//!   their current request) and forgets the service; a service that does
//!   not listen is already closed.
//! - `drained` waits (up to `timeout_ms`) until the backend at `addr` serves
//!   no request; meant for a backend an `update` just removed. `done` is
//!   false on timeout; an address nobody knows is drained.
//! - `window` is one version's rolling window, summed over its roles
//!   ([`hatoba_metrics::WindowSnapshot`]); `null` if it never served.
//! - `totals` is one version's totals since the data plane started, summed
//!   over its roles ([`VersionTotals`]); `null` if it never served. The
//!   statistical judge subtracts the totals read when an analysis run
//!   started. A data plane older than this op answers an error. It also
//!   carries the version's long-lived connections open now and ended
//!   abnormally (fields an older data plane leaves out: read as 0).
//! - `retention` sets how long the stats of a version that no table has
//!   any more stay in the recorder (`/metrics`, `window`), counted from
//!   when it left the last table; instances out of every table likewise.
//!   Kept in the state file; one hour until set. Checked every
//!   [`PRUNE_EVERY`] (`hatoba_metrics::retention`). New in protocol 2: a
//!   protocol-1 data plane answers it with an error.
//! - `sockets` hands over duplicates of the listening sockets of one
//!   service (one per listener thread) as descriptors attached to the
//!   reply line (`SCM_RIGHTS`, [`crate::handover`]); `addr` is `null` and
//!   `count` 0 for a service that does not listen. The request names its
//!   protocol; another one is refused with both numbers. New in protocol
//!   3: an older data plane cannot hand its sockets over, and the
//!   controller says so ([`crate::handover::Keeper::refresh`]).
//! - `shutdown` answers, then stops every listener (gracefully) and the
//!   control server; the state file stays, for the next start.
//! - Any failure is `{"reply":"error","message":…}`. A line that is not a
//!   request gets one too and the connection stays usable; a line over
//!   [`MAX_LINE`] bytes is refused and the connection closed.
//!
//! The state file is `{"format":1,"services":{…},"metrics_retention_ms":…}`,
//! the `services` of [`DataPlaneState`] and the retention (absent in files
//! written before it existed: the default then).
//!
//! Starting on a socket path that exists: if a data plane answers there,
//! the start is refused ([`ControlError::AlreadyRunning`]); otherwise the
//! stale socket file is removed. The socket is bound before the state file
//! is read, so two data planes never both serve one state file. A saved
//! service whose sockets the controller's keeper holds (it kept them when
//! the previous data plane died) accepts on those sockets instead of
//! binding new ones: the connections queued while no data plane ran are
//! served ([`crate::handover::take_over`]).

use crate::forward::ProxyOptions;
use crate::server::ProxyServer;
use crate::table::{Backend, RouteError, RouteSpec, Router};
use hatoba_metrics::retention::{LastSeen, Present};
use hatoba_metrics::{Recorder, Window, WindowSnapshot, WindowStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The protocol version [`Request::Hello`] reports.
pub const PROTOCOL: u32 = 3;
/// How long a version's stats outlive its last table until a `retention`
/// request says otherwise: one hour.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);
/// How often the data plane prunes what outlived the retention.
pub const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// The longest request line accepted, newline excluded: 1 MiB.
pub const MAX_LINE: usize = 1024 * 1024;
/// The longest reply line a client accepts.
const MAX_REPLY: usize = 64 * 1024 * 1024;
/// How long a client waits for a reply (a drain waits this much longer).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a starting data plane waits for one already on its socket.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The state file's format version.
const STATE_FORMAT: u32 = 1;
/// Idle connections a client keeps for reuse.
const MAX_IDLE: usize = 4;

/// How a backend's drain went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// Every request and long-lived connection ended before the timeout
    /// (or the backend was unknown).
    pub done: bool,
    /// Open when the drain began; `None` when the data plane cannot say.
    pub open: Option<u32>,
    /// Still open when it ended.
    pub left: Option<u32>,
}

/// A request from the controller: one JSON object per line, tagged by `op`
/// (`"hello"`, `"listen"`, `"update"`, `"drained"`, `"window"`,
/// `"totals"`, `"snapshot"`, `"close"`, `"retention"`, `"sockets"`,
/// `"shutdown"`). See the module docs for the wire form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who is there: answered with [`Reply::Hello`].
    Hello,
    /// Serve `service` on `addr`; answered with [`Reply::Listening`].
    Listen {
        /// The service name.
        service: String,
        /// Where to listen; port 0 picks a free port.
        addr: SocketAddr,
    },
    /// Replace the table of a listening service (`route.service`).
    Update {
        /// The new table.
        route: RouteSpec,
    },
    /// Wait until the backend at `addr` serves no request.
    Drained {
        /// The backend.
        addr: SocketAddr,
        /// How long to wait at most, in ms.
        timeout_ms: u64,
    },
    /// One version's rolling window, summed over its roles.
    Window {
        /// The service.
        service: String,
        /// The version.
        version: String,
        /// Which window: `"10s"`, `"1m"` or `"5m"`.
        window: Window,
    },
    /// One version's totals since the data plane started, summed over
    /// its roles.
    Totals {
        /// The service.
        service: String,
        /// The version.
        version: String,
    },
    /// The whole current state.
    Snapshot,
    /// Stop serving a service (one the spec no longer has).
    Close {
        /// The service name.
        service: String,
    },
    /// How long the stats of a version out of every table are kept.
    Retention {
        /// The retention, in ms (at least 1).
        metrics_ms: u64,
    },
    /// Duplicates of a service's listening sockets, attached to the reply
    /// as descriptors.
    Sockets {
        /// The service.
        service: String,
        /// The asker's [`PROTOCOL`]; another one is refused.
        protocol: u32,
    },
    /// Answer, then stop every listener and the control server.
    Shutdown,
}

/// A reply from the data plane: one JSON object per line, tagged by
/// `reply`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Done (`update`, `shutdown`).
    Ok,
    /// Who answers.
    Hello {
        /// The data plane's process id.
        pid: u32,
        /// Its [`PROTOCOL`] version.
        protocol: u32,
        /// The services it serves, by name.
        services: Vec<String>,
    },
    /// The service listens here (the port it got, when asked for port 0).
    Listening {
        /// The bound address.
        addr: SocketAddr,
    },
    /// Whether the backend drained before the timeout.
    Drained {
        /// True when it serves no request (or was unknown).
        done: bool,
        /// Requests and long-lived connections open on it when the wait
        /// began (absent from a data plane older than this field).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        open: Option<u32>,
        /// Those still open when the wait ended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        left: Option<u32>,
    },
    /// The window asked for; `None` if the version never served.
    Window {
        /// The stats.
        stats: Option<WindowSnapshot>,
    },
    /// The totals asked for; `None` if the version never served.
    Totals {
        /// The totals.
        totals: Option<VersionTotals>,
    },
    /// The whole current state.
    Snapshot {
        /// The state.
        state: DataPlaneState,
    },
    /// `count` listening sockets of `service`, bound to `addr`, come as
    /// descriptors with this line; `addr` is `None` when it does not
    /// listen.
    Sockets {
        /// The service.
        service: String,
        /// Where they listen.
        addr: Option<SocketAddr>,
        /// How many descriptors came with the line.
        count: usize,
    },
    /// The request failed; nothing changed.
    Error {
        /// What went wrong, for people.
        message: String,
    },
}

/// One version's traffic since the data plane started, summed over the
/// roles it served under: what the statistical judge compares (it
/// subtracts the totals read when an analysis run started).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionTotals {
    /// Requests that say something about the version
    /// ([`hatoba_metrics::Counts::judged`]).
    pub judged: u64,
    /// Of those, the ones that count against it
    /// ([`hatoba_metrics::Counts::against`]).
    pub against: u64,
    /// The judged requests' non-empty latency buckets, `(index, count)`
    /// in the fixed layout ([`hatoba_metrics::Bucket::at`]).
    pub latency_buckets: Vec<(u32, u64)>,
    /// Long-lived connections (WebSockets, event streams) open now. New
    /// beside protocol 3 without a bump: an older data plane leaves it out
    /// (read as 0), an older controller ignores it.
    #[serde(default)]
    pub long_lived_open: u64,
    /// Long-lived connections that ended abnormally (reset or cut by the
    /// upstream while it was routed) since the data plane started. Same
    /// compatibility as `long_lived_open`.
    #[serde(default)]
    pub long_lived_abnormal: u64,
}

impl VersionTotals {
    /// `version`'s totals in `recorder`; `None` if it never served.
    pub fn of(recorder: &Recorder, service: &str, version: &str) -> Option<VersionTotals> {
        let mut sum: Option<hatoba_metrics::Counts> = None;
        let (mut open, mut abnormal) = (0u64, 0u64);
        for role in hatoba_metrics::Role::ALL {
            if let Some(g) = recorder.get(service, role, version) {
                let ll = g.long_lived();
                open = open.saturating_add(ll.open);
                abnormal =
                    abnormal.saturating_add(ll.ended(hatoba_metrics::LongLivedEnd::Abnormal));
                let t = g.totals();
                match &mut sum {
                    Some(s) => s.merge(&t),
                    None => sum = Some(t),
                }
            }
        }
        sum.map(|c| VersionTotals {
            judged: c.judged(),
            against: c.against,
            latency_buckets: c
                .latency
                .counts()
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (u32::try_from(i).unwrap_or(u32::MAX), *n))
                .collect(),
            long_lived_open: open,
            long_lived_abnormal: abnormal,
        })
    }
}

/// What a data plane serves: the content of its state file and of
/// [`Reply::Snapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPlaneState {
    /// Every service, by name.
    pub services: BTreeMap<String, ServiceEntry>,
}

/// One service of a data plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Where it listens (the bound address, never port 0).
    pub listen: SocketAddr,
    /// Its current table.
    pub route: RouteSpec,
}

/// What [`ControlClient::hello`] learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The data plane's process id.
    pub pid: u32,
    /// Its protocol version (this build speaks [`PROTOCOL`]).
    pub protocol: u32,
    /// The services it serves.
    pub services: Vec<String>,
}

/// Where a data plane takes orders and keeps its state, and how its
/// listeners run.
#[derive(Clone, Debug)]
pub struct DataPlaneConfig {
    /// The control socket's path.
    pub socket: PathBuf,
    /// The state file's path (its directory must exist).
    pub state_file: PathBuf,
    /// Options of every listener.
    pub options: ProxyOptions,
    /// Threads per listener; 0 means one per core.
    pub threads: usize,
}

/// What went wrong starting or talking to a data plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another data plane answers on the socket.
    #[error("a data plane is already running on {} ({})", socket.display(), pid_text(*pid))]
    AlreadyRunning {
        /// The socket.
        socket: PathBuf,
        /// Its process id, if it said.
        pid: Option<u32>,
    },
    /// A file of the data plane's is a symbolic link: not followed (it
    /// could make the data plane write where it should not).
    #[error("{} is a symbolic link; not following it", path.display())]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// The socket path is taken by something that is not a socket.
    #[error("{} exists and is not a socket; not touching it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The control socket could not be bound (or a stale one removed).
    #[error("cannot bind the control socket {}", socket.display())]
    Bind {
        /// The socket.
        socket: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The state file exists but could not be read.
    #[error("cannot read the data plane state file {}", file.display())]
    StateRead {
        /// The file.
        file: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The state file is not a state this build can serve.
    #[error("the data plane state file {} is corrupt: {message}", file.display())]
    StateCorrupt {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The state file could not be written.
    #[error("cannot write the data plane state file {}", file.display())]
    StateWrite {
        /// The file.
        file: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A service of the state file could not listen again.
    #[error("cannot listen on {addr} again for service `{service}` (from {})", file.display())]
    Restore {
        /// The state file.
        file: PathBuf,
        /// The service.
        service: String,
        /// Its address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No data plane answers on the socket.
    #[error("cannot reach the data plane on {}", socket.display())]
    Unreachable {
        /// The socket.
        socket: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The connection broke, and broke again (or could not be made) on the
    /// one retry.
    #[error("lost the connection to the data plane on {} (retried once)", socket.display())]
    Disconnected {
        /// The socket.
        socket: PathBuf,
        /// The last OS error.
        #[source]
        source: io::Error,
    },
    /// No reply in time; the connection is dropped.
    #[error("the data plane on {} did not answer within {waited:?}", socket.display())]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// How long the call waited.
        waited: Duration,
    },
    /// The data plane answered with an error; nothing changed.
    #[error("the data plane on {} refused: {message}", socket.display())]
    Refused {
        /// The socket.
        socket: PathBuf,
        /// Its message.
        message: String,
    },
    /// The data plane answered something this client does not understand.
    #[error("unexpected answer from the data plane on {}: {message}", socket.display())]
    Protocol {
        /// The socket.
        socket: PathBuf,
        /// What was wrong.
        message: String,
    },
}

fn pid_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_owned(),
    }
}

/// An error and its sources on one line, for a [`Reply::Error`].
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// A data plane with its control socket bound and its saved state serving:
/// ready. [`DataPlane::run`] answers the controller until told to stop.
#[derive(Debug)]
pub struct DataPlane {
    /// What it took over from the controller's keeper at start.
    taken_over: TakeOverReport,
    listener: tokio::net::UnixListener,
    socket: SocketFile,
    plane: Arc<Plane>,
    /// The OS lock on `dataplane.lock`, held while this lives.
    _lock: std::fs::File,
}

/// The shared state the connections work on.
#[derive(Debug)]
struct Plane {
    recorder: Arc<Recorder>,
    /// The metrics retention in ms (see [`Request::Retention`]).
    retention_ms: std::sync::atomic::AtomicU64,
    options: ProxyOptions,
    threads: usize,
    state_file: PathBuf,
    inner: tokio::sync::Mutex<Inner>,
    stop: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Inner {
    services: BTreeMap<String, Running>,
    /// Backends removed from a table that may still serve requests.
    retired: Vec<Retired>,
    /// Old listeners shutting down.
    stopping: Vec<JoinHandle<()>>,
    /// A table applied while the state file could not be written (a full
    /// disk): written again at the next update or retry.
    unsaved: bool,
}

#[derive(Debug)]
struct Running {
    listen: SocketAddr,
    router: Arc<Router>,
    server: ProxyServer,
}

#[derive(Debug)]
struct Retired {
    router: Arc<Router>,
    backend: Weak<Backend>,
}

impl Inner {
    fn state(&self) -> DataPlaneState {
        DataPlaneState {
            services: self
                .services
                .iter()
                .map(|(name, run)| {
                    let entry = ServiceEntry {
                        listen: run.listen,
                        route: run.router.table().spec.clone(),
                    };
                    (name.clone(), entry)
                })
                .collect(),
        }
    }
}

/// What a starting data plane took over from the controller's keeper.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TakeOverReport {
    /// The services that accept on the sockets the keeper held, with how
    /// many sockets each.
    pub adopted: Vec<(String, usize)>,
    /// Why the others bound new sockets (no keeper, another address...).
    pub missed: Vec<String>,
}

/// The socket file this process bound; removed on drop if it still is ours.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current.is_some() && current == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl DataPlane {
    /// Claims the control socket (refusing if a data plane answers there,
    /// replacing a stale socket file), then restores the state file if
    /// there is one: every saved service listens again on its address with
    /// its last table. When this returns the data plane serves traffic and
    /// the controller may connect (its requests wait for [`run`](Self::run)).
    pub async fn bind(cfg: DataPlaneConfig) -> Result<DataPlane, ControlError> {
        let lock = lock_socket(&cfg.socket).await?;
        let (listener, socket) = claim_socket(&cfg.socket).await?;
        let (state, retention) = read_state(&cfg.state_file).await?;
        let saved: Vec<(String, SocketAddr)> = state
            .services
            .iter()
            .map(|(name, e)| (name.clone(), e.listen))
            .collect();
        let mut taken =
            crate::handover::take_over(&crate::handover::keeper_path(&cfg.socket), &saved).await;
        let mut report = TakeOverReport {
            missed: std::mem::take(&mut taken.missed),
            ..TakeOverReport::default()
        };
        let recorder = Arc::new(Recorder::new());
        let mut inner = Inner::default();
        for (name, entry) in state.services {
            let kept = taken.sockets.remove(&name);
            if let Some(k) = &kept {
                report.adopted.push((name.clone(), k.listeners.len()));
            }
            let restored = Router::new(entry.route, Arc::clone(&recorder))
                .map_err(io::Error::other)
                .map(Arc::new)
                .and_then(|router| {
                    let server = match kept {
                        Some(k) => ProxyServer::adopt(
                            k.listeners,
                            Arc::clone(&router),
                            cfg.options.clone(),
                        )?,
                        None => ProxyServer::start(
                            entry.listen,
                            Arc::clone(&router),
                            cfg.options.clone(),
                            cfg.threads,
                        )?,
                    };
                    Ok(Running {
                        listen: server.local_addr(),
                        router,
                        server,
                    })
                });
            match restored {
                Ok(run) => {
                    inner.services.insert(name, run);
                }
                Err(source) => {
                    stop_all(&mut inner).await;
                    return Err(ControlError::Restore {
                        file: cfg.state_file.clone(),
                        service: name,
                        addr: entry.listen,
                        source,
                    });
                }
            }
        }
        let (stop, _) = watch::channel(false);
        Ok(DataPlane {
            taken_over: report,
            _lock: lock,
            listener,
            socket,
            plane: Arc::new(Plane {
                recorder,
                retention_ms: std::sync::atomic::AtomicU64::new(
                    u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
                ),
                options: cfg.options,
                threads: cfg.threads,
                state_file: cfg.state_file,
                inner: tokio::sync::Mutex::new(inner),
                stop,
            }),
        })
    }

    /// The control socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket.path
    }

    /// What it took over from the controller's keeper when it started.
    pub fn taken_over(&self) -> &TakeOverReport {
        &self.taken_over
    }

    /// The recorder every listener measures into (for an admin `/metrics`).
    pub fn recorder(&self) -> Arc<Recorder> {
        Arc::clone(&self.plane.recorder)
    }

    /// What it serves now.
    pub async fn state(&self) -> DataPlaneState {
        self.plane.inner.lock().await.state()
    }

    /// Answers the controller until `shutdown` completes or a
    /// [`Request::Shutdown`] arrives; then stops accepting, removes the
    /// socket file, and stops every listener gracefully (waiting for their
    /// requests in flight). The state file stays. Nothing in it fails
    /// today (a broken connection only ends that connection); the `Result`
    /// leaves room for what may.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ControlError> {
        let DataPlane {
            taken_over: _,
            listener,
            socket,
            plane,
            _lock: lock,
        } = self;
        let mut stopped = plane.stop.subscribe();
        let mut conns = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        // Tables applied while the state file could not be written are
        // written as soon as it can be again.
        let mut save_again = tokio::time::interval(Duration::from_secs(2));
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = LastSeen::new();
        let mut told = false;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = prune.tick() => plane.prune(&mut seen).await,
                () = async { let _ = stopped.wait_for(|stop| *stop).await; } => {
                    told = true;
                    break;
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = save_again.tick() => {
                    let mut inner = plane.inner.lock().await;
                    if inner.unsaved {
                        let state = inner.state();
                        inner.unsaved = plane.persist(&state).await.is_err();
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(serve_connection(Arc::clone(&plane), stream));
                    }
                    // Out of descriptors and the like: back off rather than spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                },
            }
        }
        drop(listener);
        drop(socket);
        conns.shutdown().await;
        let mut inner = plane.inner.lock().await;
        stop_all(&mut inner).await;
        if told {
            // Told to stop by its controller (`hatoba up` stopping everything):
            // the instances behind these tables are being stopped too, so the
            // next data plane must not serve them. A signal alone (a crash
            // of the controller's host process, systemd) keeps them.
            let _ = plane.persist(&DataPlaneState::default()).await;
        }
        // Let go only once every listener has stopped.
        drop(lock);
        Ok(())
    }
}

/// Binds and runs a data plane until `shutdown` completes or it is told to
/// stop: [`DataPlane::bind`] then [`DataPlane::run`].
pub async fn serve(
    cfg: DataPlaneConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControlError> {
    DataPlane::bind(cfg).await?.run(shutdown).await
}

/// Stops every listener (gracefully) and waits for them.
async fn stop_all(inner: &mut Inner) {
    let services = std::mem::take(&mut inner.services);
    let mut waits = std::mem::take(&mut inner.stopping);
    for (_, run) in services {
        waits.push(tokio::task::spawn_blocking(move || run.server.shutdown()));
    }
    for w in waits {
        let _ = w.await;
    }
}

/// The lock file beside a control socket (`dataplane.sock` →
/// `dataplane.lock`).
pub fn lock_path(socket: &Path) -> PathBuf {
    socket.with_extension("lock")
}

/// Takes the exclusive OS lock beside the socket, held for the data
/// plane's life (the kernel lets go when the process ends, however it
/// ends): two data planes started at the same instant on one state
/// directory cannot both pass the socket check below. The holder's pid is
/// written into the file for the refusal's message.
async fn lock_socket(socket: &Path) -> Result<std::fs::File, ControlError> {
    let path = lock_path(socket);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(ControlError::Symlink { path });
    }
    // It may wait up to a second for a new holder's pid: off the runtime.
    let taken = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || take_pid_lock(&path))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)))
    };
    match taken {
        Ok(PidLock::Held(file)) => Ok(file),
        Ok(PidLock::Taken { pid }) => Err(ControlError::AlreadyRunning {
            socket: socket.to_owned(),
            pid,
        }),
        Err(source) => Err(ControlError::Bind {
            socket: socket.to_owned(),
            source,
        }),
    }
}

/// What [`take_pid_lock`] found.
#[derive(Debug)]
pub enum PidLock {
    /// This process holds the lock while the file lives (its pid inside).
    Held(std::fs::File),
    /// Another process holds it: its pid, once it has written it.
    Taken {
        /// The holder's pid, when the file names a live process.
        pid: Option<u32>,
    },
}

/// An exclusive OS lock (`flock`) on `path`, created 0600, taken or refused
/// in one step; the kernel lets go when the holder's process ends however
/// it ends, so a stale file never blocks. The holder writes its pid over
/// the old content and then cuts the file to it, so a reader never finds
/// it empty because of this write; a reader that finds no live pid yet (a
/// holder that won an instant ago) looks again for up to a second. Shared
/// by the data plane's lock and the controller's.
pub fn take_pid_lock(path: &Path) -> io::Result<PidLock> {
    use std::io::{Read as _, Seek as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            for _ in 0..50 {
                let mut text = String::new();
                if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
                    let pid = text
                        .lines()
                        .next()
                        .and_then(|l| l.trim().parse::<u32>().ok())
                        .filter(|p| Path::new(&format!("/proc/{p}")).exists());
                    if pid.is_some() {
                        return Ok(PidLock::Taken { pid });
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(PidLock::Taken { pid: None });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    let line = format!("{}\n", std::process::id());
    file.rewind()?;
    file.write_all(line.as_bytes())?;
    file.set_len(line.len() as u64)?;
    Ok(PidLock::Held(file))
}

pub(crate) async fn claim_socket(
    path: &Path,
) -> Result<(tokio::net::UnixListener, SocketFile), ControlError> {
    let bind_err = |source| ControlError::Bind {
        socket: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ControlError::NotASocket {
                path: path.to_owned(),
            });
        }
        Ok(_) => {
            if let Ok(Ok(stream)) =
                tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await
            {
                let pid = tokio::time::timeout(PROBE_TIMEOUT, probe_pid(stream))
                    .await
                    .ok()
                    .flatten();
                return Err(ControlError::AlreadyRunning {
                    socket: path.to_owned(),
                    pid,
                });
            }
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(bind_err(e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    // Bound, made private, and only then listening: nobody can connect
    // while the file still has the umask's mode.
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .map_err(bind_err)?;
    let addr = socket2::SockAddr::unix(path).map_err(bind_err)?;
    socket.bind(&addr).map_err(bind_err)?;
    // The file is ours from here: removed on drop, whatever fails next.
    let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
    let file = SocketFile {
        path: path.to_owned(),
        id: Some((meta.dev(), meta.ino())),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    socket.listen(128).map_err(bind_err)?;
    socket.set_nonblocking(true).map_err(bind_err)?;
    let listener =
        tokio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(socket))
            .map_err(bind_err)?;
    Ok((listener, file))
}

/// Asks whoever answers on `stream` for its pid.
async fn probe_pid(stream: UnixStream) -> Option<u32> {
    let mut conn = Conn::new(stream);
    let mut line = serde_json::to_vec(&Request::Hello).ok()?;
    line.push(b'\n');
    match conn.exchange(&line).await {
        Ok(Reply::Hello { pid, .. }) => Some(pid),
        _ => None,
    }
}

/// The state file as written: [`DataPlaneState`] with a format version.
#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    services: BTreeMap<String, ServiceEntry>,
    /// Absent in files written before the retention existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metrics_retention_ms: Option<u64>,
}

async fn read_state(file: &Path) -> Result<(DataPlaneState, Duration), ControlError> {
    let bytes = match tokio::fs::read(file).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((DataPlaneState::default(), DEFAULT_RETENTION));
        }
        Err(source) => {
            return Err(ControlError::StateRead {
                file: file.to_owned(),
                source,
            });
        }
    };
    let corrupt = |message: String| ControlError::StateCorrupt {
        file: file.to_owned(),
        message,
    };
    let parsed: StateFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if parsed.format != STATE_FORMAT {
        return Err(corrupt(format!(
            "format {}, this build reads format {STATE_FORMAT}",
            parsed.format
        )));
    }
    for (name, entry) in &parsed.services {
        if entry.route.service != *name {
            return Err(corrupt(format!(
                "service `{name}` has the route of service `{}`",
                entry.route.service
            )));
        }
        entry
            .route
            .validate()
            .map_err(|e| corrupt(format!("service `{name}`: {e}")))?;
        if let Some(other) = clash(&parsed.services, name, entry.listen) {
            return Err(corrupt(format!(
                "services `{other}` and `{name}` both listen on port {}",
                entry.listen.port()
            )));
        }
    }
    let retention = match parsed.metrics_retention_ms {
        Some(0) => return Err(corrupt("a metrics retention of 0 ms".to_owned())),
        Some(ms) => Duration::from_millis(ms),
        None => DEFAULT_RETENTION,
    };
    Ok((
        DataPlaneState {
            services: parsed.services,
        },
        retention,
    ))
}

/// Another service listening where `addr` would: same port, and the same
/// or an unspecified address (listeners use `SO_REUSEPORT`, so the kernel
/// would not refuse the second one: it would split the traffic).
fn clash<'a, V: HasListen>(
    services: &'a BTreeMap<String, V>,
    me: &str,
    addr: SocketAddr,
) -> Option<&'a str> {
    if addr.port() == 0 {
        return None;
    }
    services.iter().find_map(|(name, v)| {
        let other = v.listen();
        let overlaps = other.port() == addr.port()
            && (other.ip() == addr.ip()
                || other.ip().is_unspecified()
                || addr.ip().is_unspecified());
        (name != me && overlaps).then_some(name.as_str())
    })
}

trait HasListen {
    fn listen(&self) -> SocketAddr;
}

impl HasListen for ServiceEntry {
    fn listen(&self) -> SocketAddr {
        self.listen
    }
}

impl HasListen for Running {
    fn listen(&self) -> SocketAddr {
        self.listen
    }
}

/// Writes `bytes` to `file` atomically: a temporary file in the same
/// directory, fsync, rename over, fsync the directory.
fn write_atomic(file: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the state file has no name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable once the directory is.
    std::fs::File::open(&dir)?.sync_all()
}

impl Plane {
    async fn persist(&self, state: &DataPlaneState) -> Result<(), ControlError> {
        let file = StateFile {
            format: STATE_FORMAT,
            services: state.services.clone(),
            metrics_retention_ms: Some(
                self.retention_ms.load(std::sync::atomic::Ordering::Relaxed),
            ),
        };
        let path = self.state_file.clone();
        let written = match serde_json::to_vec_pretty(&file) {
            Ok(mut bytes) => {
                bytes.push(b'\n');
                let path = path.clone();
                tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)))
            }
            Err(e) => Err(io::Error::other(e)),
        };
        written.map_err(|source| ControlError::StateWrite { file: path, source })
    }

    /// The reply, and whether to stop after sending it.
    async fn handle(&self, req: Request) -> (Reply, bool) {
        let reply = match req {
            Request::Hello => {
                let inner = self.inner.lock().await;
                Reply::Hello {
                    pid: std::process::id(),
                    protocol: PROTOCOL,
                    services: inner.services.keys().cloned().collect(),
                }
            }
            Request::Listen { service, addr } => self.listen(service, addr).await,
            Request::Update { route } => self.update(route).await,
            Request::Drained { addr, timeout_ms } => {
                self.drained(addr, Duration::from_millis(timeout_ms)).await
            }
            Request::Window {
                service,
                version,
                window,
            } => Reply::Window {
                stats: self
                    .recorder
                    .version_window(&service, &version, window, crate::now_millis())
                    .map(WindowSnapshot::from),
            },
            Request::Totals { service, version } => Reply::Totals {
                totals: VersionTotals::of(&self.recorder, &service, &version),
            },
            Request::Snapshot => Reply::Snapshot {
                state: self.inner.lock().await.state(),
            },
            Request::Close { service } => self.close(&service).await,
            Request::Retention { metrics_ms } => self.set_retention(metrics_ms).await,
            // Answered with descriptors by the connection ([`Plane::sockets`]).
            Request::Sockets { service, protocol } => self.sockets(&service, protocol).await.0,
            Request::Shutdown => return (Reply::Ok, true),
        };
        (reply, false)
    }

    async fn listen(&self, service: String, addr: SocketAddr) -> Reply {
        if service.is_empty() {
            return error("a service name must not be empty".to_owned());
        }
        let mut inner = self.inner.lock().await;
        let existing = inner.services.get(&service);
        if let Some(run) = existing {
            let same = addr == run.listen || (addr.port() == 0 && addr.ip() == run.listen.ip());
            if same {
                return Reply::Listening { addr: run.listen };
            }
        }
        if let Some(other) = clash(&inner.services, &service, addr) {
            return error(format!("service `{other}` listens there"));
        }
        let router = match existing {
            Some(run) => Arc::clone(&run.router),
            None => {
                let empty = RouteSpec {
                    service: service.clone(),
                    groups: Vec::new(),
                    sticky: false,
                };
                match Router::new(empty, Arc::clone(&self.recorder)) {
                    Ok(r) => Arc::new(r),
                    Err(e) => return error(format!("service `{service}`: {e}")),
                }
            }
        };
        let server = match ProxyServer::start(
            addr,
            Arc::clone(&router),
            self.options.clone(),
            self.threads,
        ) {
            Ok(s) => s,
            Err(e) => return error(e.to_string()),
        };
        let bound = server.local_addr();
        let mut state = inner.state();
        state.services.insert(
            service.clone(),
            ServiceEntry {
                listen: bound,
                route: router.table().spec.clone(),
            },
        );
        if let Err(e) = self.persist(&state).await {
            inner
                .stopping
                .push(tokio::task::spawn_blocking(move || server.shutdown()));
            return error(chain(&e));
        }
        let old = inner.services.insert(
            service,
            Running {
                listen: bound,
                router,
                server,
            },
        );
        if let Some(old) = old {
            inner
                .stopping
                .push(tokio::task::spawn_blocking(move || old.server.shutdown()));
        }
        inner.stopping.retain(|h| !h.is_finished());
        Reply::Listening { addr: bound }
    }

    /// Duplicates of `service`'s listening sockets, to send with the reply.
    async fn sockets(&self, service: &str, protocol: u32) -> (Reply, Vec<std::os::fd::OwnedFd>) {
        if let Err(message) = crate::handover::check_protocol(protocol, "this data plane") {
            return (error(message), Vec::new());
        }
        let inner = self.inner.lock().await;
        let Some(run) = inner.services.get(service) else {
            let none = Reply::Sockets {
                service: service.to_owned(),
                addr: None,
                count: 0,
            };
            return (none, Vec::new());
        };
        match run.server.sockets() {
            Ok(fds) => (
                Reply::Sockets {
                    service: service.to_owned(),
                    addr: Some(run.listen),
                    count: fds.len(),
                },
                fds,
            ),
            Err(e) => (
                error(format!("cannot duplicate the sockets of `{service}`: {e}")),
                Vec::new(),
            ),
        }
    }

    async fn set_retention(&self, metrics_ms: u64) -> Reply {
        use std::sync::atomic::Ordering::Relaxed;
        if metrics_ms == 0 {
            return error("a metrics retention must be above 0 ms".to_owned());
        }
        let inner = self.inner.lock().await;
        let before = self.retention_ms.swap(metrics_ms, Relaxed);
        if before == metrics_ms {
            return Reply::Ok;
        }
        if let Err(e) = self.persist(&inner.state()).await {
            self.retention_ms.store(before, Relaxed);
            return error(chain(&e));
        }
        Reply::Ok
    }

    /// Forgets the stats of versions and instances out of every table for
    /// the retention. Under the state lock, so no table is being built.
    async fn prune(&self, seen: &mut LastSeen) {
        let inner = self.inner.lock().await;
        let mut present = Present::default();
        for run in inner.services.values() {
            add_table(&mut present, &run.router.table().spec);
        }
        let retention =
            Duration::from_millis(self.retention_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.recorder
            .prune(seen, &present, crate::now_millis(), retention);
    }

    async fn close(&self, service: &str) -> Reply {
        let mut inner = self.inner.lock().await;
        if !inner.services.contains_key(service) {
            return Reply::Ok;
        }
        let mut state = inner.state();
        state.services.remove(service);
        // Saved first: a data plane restarted now must not listen again.
        if let Err(e) = self.persist(&state).await {
            return error(chain(&e));
        }
        if let Some(run) = inner.services.remove(service) {
            inner
                .stopping
                .push(tokio::task::spawn_blocking(move || run.server.shutdown()));
        }
        inner.stopping.retain(|h| !h.is_finished());
        Reply::Ok
    }

    async fn update(&self, route: RouteSpec) -> Reply {
        let invalid = |e: RouteError| {
            error(format!(
                "invalid route for service `{}`: {e}",
                route.service
            ))
        };
        if let Err(e) = route.validate() {
            return invalid(e);
        }
        let mut inner = self.inner.lock().await;
        let Some(router) = inner
            .services
            .get(&route.service)
            .map(|r| Arc::clone(&r.router))
        else {
            return error(format!(
                "service `{}` does not listen anywhere: send `listen` first",
                route.service
            ));
        };
        let old = router.table();
        if old.spec == route {
            return Reply::Ok;
        }
        let mut state = inner.state();
        if let Some(entry) = state.services.get_mut(&route.service) {
            entry.route = route.clone();
        }
        // Persisted first, so a restarted data plane serves the newest
        // table; but a state file that cannot be written (a full disk)
        // must not keep traffic on a version the controller is taking
        // out: the table is applied all the same and the file written
        // again at the next update or retry ([`DataPlane::run`]).
        inner.unsaved = self.persist(&state).await.is_err();
        if let Err(e) = router.update(route.clone()) {
            // Validated above, so not expected; put the file back as it was.
            let _ = self.persist(&inner.state()).await;
            return invalid(e);
        }
        for b in old.groups.iter().flat_map(|g| g.backends.iter()) {
            if b.is_removed() {
                inner.retired.push(Retired {
                    router: Arc::clone(&router),
                    backend: Arc::downgrade(b),
                });
            }
        }
        inner.retired.retain(|r| r.backend.strong_count() > 0);
        Reply::Ok
    }

    async fn drained(&self, addr: SocketAddr, timeout: Duration) -> Reply {
        let targets: Vec<(Arc<Router>, Arc<Backend>)> = {
            let inner = self.inner.lock().await;
            let retired = inner.retired.iter().filter_map(|r| {
                let b = r.backend.upgrade()?;
                (b.addr == addr).then(|| (Arc::clone(&r.router), b))
            });
            let current = inner
                .services
                .values()
                .filter_map(|run| Some((Arc::clone(&run.router), run.router.backend(addr)?)));
            retired.chain(current).collect()
        };
        let open_now = || targets.iter().map(|(_, b)| b.in_flight()).sum::<u32>();
        let open = open_now();
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let mut done = true;
        for (router, backend) in &targets {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(tokio::time::Instant::now()),
                None => timeout,
            };
            if !router.drained(backend, left).await {
                done = false;
                break;
            }
        }
        Reply::Drained {
            done,
            open: Some(open),
            left: Some(if done { 0 } else { open_now() }),
        }
    }
}

fn error(message: String) -> Reply {
    Reply::Error { message }
}

/// Adds what one route table holds to `present`, for pruning.
pub fn add_table(present: &mut Present, spec: &RouteSpec) {
    for g in &spec.groups {
        let names: Vec<String> = g.backends.iter().map(ToString::to_string).collect();
        present.add_group(
            &spec.service,
            g.role,
            &g.version,
            names.iter().map(String::as_str),
        );
    }
}

/// Reads one line of at most `max` bytes (newline excluded) into `buf`,
/// without the newline. `Ok(false)` at the end of the stream (a partial
/// last line is dropped: its sender is gone); `Err(TooLong)` past `max`.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<bool, LineError> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_until(b'\n', buf)
        .await
        .map_err(LineError::Io)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(true);
    }
    if buf.len() > max {
        return Err(LineError::TooLong);
    }
    Ok(false)
}

#[derive(Debug)]
pub(crate) enum LineError {
    Io(io::Error),
    TooLong,
}

async fn write_reply(w: &mut OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

/// One controller connection: requests in order until it closes. Whatever
/// the client does (vanish mid-request, send garbage) only ends this task.
async fn serve_connection(plane: Arc<Plane>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    let mut line = Vec::new();
    loop {
        match read_line(&mut read, &mut line, MAX_LINE).await {
            Ok(true) => {}
            Ok(false) | Err(LineError::Io(_)) => return,
            Err(LineError::TooLong) => {
                let refused = error(format!(
                    "request line longer than {MAX_LINE} bytes; closing the connection"
                ));
                let _ = write_reply(&mut write, &refused).await;
                return;
            }
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        let (reply, stop, fds) = match serde_json::from_slice::<Request>(&line) {
            Ok(Request::Sockets { service, protocol }) => {
                let (reply, fds) = plane.sockets(&service, protocol).await;
                (reply, false, fds)
            }
            Ok(req) => {
                let (reply, stop) = plane.handle(req).await;
                (reply, stop, Vec::new())
            }
            Err(e) => (error(format!("malformed request: {e}")), false, Vec::new()),
        };
        let sent = if fds.is_empty() {
            write_reply(&mut write, &reply).await
        } else {
            crate::handover::send_with_fds(write.as_ref(), &reply, &fds).await
        };
        if stop {
            plane.stop.send_replace(true);
            return;
        }
        if sent.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// The controller's handle on a data plane. Cheap to clone and share: calls
/// on clones run concurrently, each on its own connection (idle ones are
/// kept for reuse).
///
/// A call whose connection breaks (the data plane restarted) reconnects once
/// and resends (every request is idempotent); if that fails too it is a
/// [`ControlError::Disconnected`] naming the socket. A call waits at most
/// [`CALL_TIMEOUT`] for its reply ([`drained`](Self::drained): plus its
/// timeout).
#[derive(Clone, Debug)]
pub struct ControlClient {
    shared: Arc<ClientShared>,
}

#[derive(Debug)]
struct ClientShared {
    socket: PathBuf,
    idle: std::sync::Mutex<Vec<Conn>>,
}

#[derive(Debug)]
struct Conn {
    read: tokio::io::BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    buf: Vec<u8>,
}

/// How one exchange on one connection failed.
enum ExchangeError {
    /// The connection is broken: worth one retry on a new one.
    Broken(io::Error),
    /// A reply that is not one.
    Garbled(String),
}

impl Conn {
    fn new(stream: UnixStream) -> Conn {
        let (read, write) = stream.into_split();
        Conn {
            read: tokio::io::BufReader::new(read),
            write,
            buf: Vec::new(),
        }
    }

    async fn open(socket: &Path) -> io::Result<Conn> {
        Ok(Conn::new(UnixStream::connect(socket).await?))
    }

    async fn exchange(&mut self, line: &[u8]) -> Result<Reply, ExchangeError> {
        self.write
            .write_all(line)
            .await
            .map_err(ExchangeError::Broken)?;
        self.write.flush().await.map_err(ExchangeError::Broken)?;
        match read_line(&mut self.read, &mut self.buf, MAX_REPLY).await {
            Ok(true) => serde_json::from_slice(&self.buf).map_err(|e| {
                ExchangeError::Garbled(format!("{e} in {}", String::from_utf8_lossy(&self.buf)))
            }),
            Ok(false) => Err(ExchangeError::Broken(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed before a reply",
            ))),
            Err(LineError::Io(e)) => Err(ExchangeError::Broken(e)),
            Err(LineError::TooLong) => Err(ExchangeError::Garbled(format!(
                "a reply longer than {MAX_REPLY} bytes"
            ))),
        }
    }
}

impl ControlClient {
    /// Connects to the data plane on `socket`.
    pub async fn connect(socket: impl Into<PathBuf>) -> Result<ControlClient, ControlError> {
        let socket = socket.into();
        let conn = match Conn::open(&socket).await {
            Ok(c) => c,
            Err(source) => return Err(ControlError::Unreachable { socket, source }),
        };
        Ok(ControlClient {
            shared: Arc::new(ClientShared {
                socket,
                idle: std::sync::Mutex::new(vec![conn]),
            }),
        })
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.shared.socket
    }

    /// Who answers: pid, protocol version, services.
    pub async fn hello(&self) -> Result<Hello, ControlError> {
        match self.call(&Request::Hello, Duration::ZERO).await? {
            Reply::Hello {
                pid,
                protocol,
                services,
            } => Ok(Hello {
                pid,
                protocol,
                services,
            }),
            other => Err(self.unexpected("hello", &other)),
        }
    }

    /// Serves `service` on `addr` (idempotent); returns the bound address.
    /// Refused with the reason only (the address is in use, another service
    /// listens there): the caller knows the address and the service.
    pub async fn listen(
        &self,
        service: &str,
        addr: SocketAddr,
    ) -> Result<SocketAddr, ControlError> {
        let req = Request::Listen {
            service: service.to_owned(),
            addr,
        };
        match self.call(&req, Duration::ZERO).await? {
            Reply::Listening { addr } => Ok(addr),
            other => Err(self.unexpected("listening", &other)),
        }
    }

    /// Replaces the table of the listening service `route.service`.
    pub async fn update(&self, route: &RouteSpec) -> Result<(), ControlError> {
        let req = Request::Update {
            route: route.clone(),
        };
        self.expect_ok(&req).await
    }

    /// Waits until the backend at `addr` serves no request, up to
    /// `timeout`: true when it drained (or was unknown), false on timeout.
    pub async fn drained(&self, addr: SocketAddr, timeout: Duration) -> Result<bool, ControlError> {
        Ok(self.drain(addr, timeout).await?.done)
    }

    /// [`drained`](Self::drained), with the connections open at the start
    /// and left at the end.
    pub async fn drain(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<DrainReport, ControlError> {
        let req = Request::Drained {
            addr,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        match self.call(&req, timeout).await? {
            Reply::Drained { done, open, left } => Ok(DrainReport { done, open, left }),
            other => Err(self.unexpected("drained", &other)),
        }
    }

    /// One version's window (summed over its roles); `None` if it never
    /// served.
    pub async fn window(
        &self,
        service: &str,
        version: &str,
        window: Window,
    ) -> Result<Option<WindowStats>, ControlError> {
        let req = Request::Window {
            service: service.to_owned(),
            version: version.to_owned(),
            window,
        };
        match self.call(&req, Duration::ZERO).await? {
            Reply::Window { stats: None } => Ok(None),
            Reply::Window { stats: Some(s) } => {
                s.to_stats().map(Some).map_err(|e| ControlError::Protocol {
                    socket: self.shared.socket.clone(),
                    message: e.to_string(),
                })
            }
            other => Err(self.unexpected("window", &other)),
        }
    }

    /// One version's totals since the data plane started (summed over its
    /// roles); `None` if it never served.
    pub async fn totals(
        &self,
        service: &str,
        version: &str,
    ) -> Result<Option<VersionTotals>, ControlError> {
        let req = Request::Totals {
            service: service.to_owned(),
            version: version.to_owned(),
        };
        match self.call(&req, Duration::ZERO).await? {
            Reply::Totals { totals } => Ok(totals),
            other => Err(self.unexpected("totals", &other)),
        }
    }

    /// Everything it serves now.
    pub async fn snapshot(&self) -> Result<DataPlaneState, ControlError> {
        match self.call(&Request::Snapshot, Duration::ZERO).await? {
            Reply::Snapshot { state } => Ok(state),
            other => Err(self.unexpected("snapshot", &other)),
        }
    }

    /// Stops serving `service`; its connections finish their current request.
    pub async fn close(&self, service: &str) -> Result<(), ControlError> {
        self.expect_ok(&Request::Close {
            service: service.to_owned(),
        })
        .await
    }

    /// Sets how long the stats of a version out of every table are kept
    /// (at least 1 ms). A protocol-1 data plane refuses it.
    pub async fn retention(&self, metrics: Duration) -> Result<(), ControlError> {
        self.expect_ok(&Request::Retention {
            metrics_ms: u64::try_from(metrics.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        })
        .await
    }

    /// Stops the data plane (its listeners finish their requests first).
    pub async fn shutdown(&self) -> Result<(), ControlError> {
        self.expect_ok(&Request::Shutdown).await
    }

    /// [`ControlClient::shutdown`], then waits until the data plane has
    /// finished: its lock is let go only once every listener has stopped
    /// and its requests in flight have ended. True when it finished within
    /// `limit`. A stop that then ends the backends cuts no request.
    pub async fn shutdown_and_wait(&self, limit: Duration) -> Result<bool, ControlError> {
        self.shutdown().await?;
        let path = lock_path(&self.shared.socket);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let free = std::fs::OpenOptions::new()
                .read(true)
                .open(&path)
                .map(|f| f.try_lock().is_ok());
            // No lock file at all: nothing holds it either.
            if free.unwrap_or(true) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn expect_ok(&self, req: &Request) -> Result<(), ControlError> {
        match self.call(req, Duration::ZERO).await? {
            Reply::Ok => Ok(()),
            other => Err(self.unexpected("ok", &other)),
        }
    }

    fn unexpected(&self, wanted: &str, got: &Reply) -> ControlError {
        ControlError::Protocol {
            socket: self.shared.socket.clone(),
            message: format!("expected a `{wanted}` reply, got {got:?}"),
        }
    }

    fn take_idle(&self) -> Option<Conn> {
        self.shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put_back(&self, conn: Conn) {
        let mut idle = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Sends `req` and reads its reply; on a broken connection reconnects
    /// once and resends. A [`Reply::Error`] becomes [`ControlError::Refused`].
    async fn call(&self, req: &Request, extra: Duration) -> Result<Reply, ControlError> {
        let socket = &self.shared.socket;
        let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Protocol {
            socket: socket.clone(),
            message: e.to_string(),
        })?;
        line.push(b'\n');
        let limit = CALL_TIMEOUT.saturating_add(extra);
        let mut last_broken = None;
        for attempt in 0..2 {
            let pooled = if attempt == 0 { self.take_idle() } else { None };
            let mut conn = match pooled {
                Some(c) => c,
                None => match Conn::open(socket).await {
                    Ok(c) => c,
                    Err(source) if attempt == 0 => {
                        return Err(ControlError::Unreachable {
                            socket: socket.clone(),
                            source,
                        });
                    }
                    Err(source) => {
                        return Err(ControlError::Disconnected {
                            socket: socket.clone(),
                            source,
                        });
                    }
                },
            };
            let Ok(exchanged) = tokio::time::timeout(limit, conn.exchange(&line)).await else {
                return Err(ControlError::Timeout {
                    socket: socket.clone(),
                    waited: limit,
                });
            };
            match exchanged {
                Ok(Reply::Error { message }) => {
                    self.put_back(conn);
                    return Err(ControlError::Refused {
                        socket: socket.clone(),
                        message,
                    });
                }
                Ok(reply) => {
                    self.put_back(conn);
                    return Ok(reply);
                }
                Err(ExchangeError::Garbled(message)) => {
                    return Err(ControlError::Protocol {
                        socket: socket.clone(),
                        message,
                    });
                }
                Err(ExchangeError::Broken(e)) => {
                    // The other idle connections went with the same process.
                    self.shared
                        .idle
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clear();
                    last_broken = Some(e);
                }
            }
        }
        Err(ControlError::Disconnected {
            socket: socket.clone(),
            source: last_broken.unwrap_or_else(|| io::Error::other("connection broken")),
        })
    }
}
