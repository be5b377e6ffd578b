//! Listening sockets handed between processes over a Unix socket
//! (`SCM_RIGHTS`), so that a data plane killed with SIGKILL refuses no
//! connection.
//!
//! A listening socket lives as long as any process holds a descriptor of
//! it. The controller (`hatoba up`) keeps a duplicate of every listening
//! socket of its data plane in a [`Keeper`]: when the data plane dies, the
//! kernel keeps those sockets open and goes on queuing connections in
//! their accept backlogs (with `SO_REUSEPORT`, one socket per listener
//! thread, every socket of the group must be kept: the kernel would drop
//! the connections queued on a member whose last descriptor closed). The
//! restarted data plane asks the keeper for them before it restores its
//! saved services ([`take_over`]) and accepts on those very sockets, so
//! the connections that arrived while it was dead are served.
//!
//! Both directions use one exchange, on the data plane's socket and on the
//! keeper's alike: `{"op":"sockets","service":"web","protocol":3}` is
//! answered by `{"reply":"sockets","service":"web","addr":"127.0.0.1:8080",
//! "count":2}` with `count` descriptors attached to that line (`addr` is
//! `null` and `count` 0 when the service is not known there). A request in
//! another protocol is refused with a message naming both numbers.
//! Received descriptors are close-on-exec, so instances started by the
//! controller never inherit a listening socket.
//!
//! What this module must not do: hand a descriptor to anyone but the
//! owner of the state directory (the sockets are 0600 in it), or keep a
//! socket the data plane no longer listens on for longer than one
//! [`Keeper::refresh`] (the kernel would queue connections nobody serves).
//! Descriptor passing is done through `rustix`, whose API is safe: received
//! descriptors arrive as `OwnedFd`.

use crate::control::{ControlClient, ControlError, PROTOCOL, Reply, Request};
use std::collections::BTreeMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncWriteExt as _, Interest};
use tokio::net::UnixStream;

/// The most descriptors one `SCM_RIGHTS` message carries (Linux's
/// `SCM_MAX_FD`); a listener of more threads than this is not handed over.
pub const MAX_FDS: usize = 253;
/// The longest reply line read with descriptors.
const MAX_REPLY: usize = 64 * 1024;
/// How long a restarting data plane waits for the keeper's answer.
pub const TAKE_OVER_TIMEOUT: Duration = Duration::from_secs(2);

/// The keeper's socket beside a data plane's control socket
/// (`dataplane.sock` → `dataplane.keeper.sock`).
pub fn keeper_path(socket: &Path) -> PathBuf {
    socket.with_extension("keeper.sock")
}

/// The listening sockets of one service.
#[derive(Debug)]
pub struct Sockets {
    /// Where they listen.
    pub addr: SocketAddr,
    /// One per listener thread, all bound to `addr` with `SO_REUSEPORT`.
    pub listeners: Vec<std::net::TcpListener>,
}

impl Sockets {
    fn dup(&self) -> io::Result<Vec<OwnedFd>> {
        self.listeners
            .iter()
            .map(|l| l.try_clone().map(OwnedFd::from))
            .collect()
    }
}

/// Sends `reply` as one line with `fds` attached (with the line's first
/// bytes), the rest of the line after it.
pub(crate) async fn send_with_fds(
    stream: &UnixStream,
    reply: &Reply,
    fds: &[OwnedFd],
) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    if fds.len() > MAX_FDS {
        return Err(io::Error::other(format!(
            "{} listening sockets, at most {MAX_FDS} go in one message",
            fds.len()
        )));
    }
    let mut line = serde_json::to_vec(reply).map_err(io::Error::other)?;
    line.push(b'\n');
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))];
    let sent = loop {
        stream.writable().await?;
        let attempt = stream.try_io(Interest::WRITABLE, || {
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
                return Err(io::Error::other("the descriptors do not fit the message"));
            }
            sendmsg(
                stream,
                &[io::IoSlice::new(&line)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        });
        match attempt {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    };
    // The descriptors went with the first bytes; the rest is plain data.
    let mut rest = line.get(sent..).unwrap_or_default();
    while !rest.is_empty() {
        stream.writable().await?;
        match stream.try_write(rest) {
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one reply line and the descriptors that came with it (made
/// close-on-exec as they arrive). Nothing else may be in flight on
/// `stream`: the peer answers one request at a time.
async fn recv_with_fds(stream: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut chunk = [0u8; 4096];
    loop {
        stream.readable().await?;
        let got = stream.try_io(Interest::READABLE, || {
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let msg = recvmsg(
                stream,
                &mut [io::IoSliceMut::new(&mut chunk)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = m {
                    fds.extend(received);
                }
            }
            if msg.flags.contains(ReturnFlags::CTRUNC) {
                return Err(io::Error::other(
                    "more descriptors came than fit the buffer; the extra ones were closed",
                ));
            }
            Ok(msg.bytes)
        });
        let n = match got {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed before a reply",
            ));
        }
        line.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if line.last() == Some(&b'\n') {
            line.pop();
            return Ok((line, fds));
        }
        if line.len() > MAX_REPLY {
            return Err(io::Error::other(format!(
                "a reply longer than {MAX_REPLY} bytes"
            )));
        }
    }
}

/// Turns received descriptors into listeners, each checked to be a
/// listening TCP socket bound to `addr`.
fn listeners_at(addr: SocketAddr, fds: Vec<OwnedFd>) -> Result<Vec<std::net::TcpListener>, String> {
    fds.into_iter()
        .map(|fd| {
            let socket = socket2::Socket::from(fd);
            let listening = socket.is_listener().unwrap_or(false);
            let at = socket.local_addr().ok().and_then(|a| a.as_socket());
            if !listening || at != Some(addr) {
                return Err(format!(
                    "a descriptor for {addr} is not a socket listening there (it is at {at:?}, listening: {listening})"
                ));
            }
            socket.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(std::net::TcpListener::from(socket))
        })
        .collect()
}

/// Asks whoever answers on `socket` (a data plane, or a controller's
/// keeper) for the listening sockets of `service`: `None` when it has none.
pub async fn fetch(socket: &Path, service: &str) -> Result<Option<Sockets>, String> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot reach {}: {e}", socket.display()))?;
    let mut request = serde_json::to_vec(&Request::Sockets {
        service: service.to_owned(),
        protocol: PROTOCOL,
    })
    .map_err(|e| e.to_string())?;
    request.push(b'\n');
    stream
        .write_all(&request)
        .await
        .map_err(|e| format!("cannot ask {}: {e}", socket.display()))?;
    let (line, fds) = recv_with_fds(&stream)
        .await
        .map_err(|e| format!("no sockets from {}: {e}", socket.display()))?;
    let reply: Reply = serde_json::from_slice(&line).map_err(|e| {
        format!(
            "unexpected answer from {}: {e} in {}",
            socket.display(),
            String::from_utf8_lossy(&line)
        )
    })?;
    // Descriptors that came with anything else are dropped (closed) here.
    match reply {
        Reply::Sockets {
            service: named,
            addr,
            count,
        } => {
            if named != service || count != fds.len() {
                return Err(format!(
                    "{} answered {count} sockets of `{named}` with {} descriptors, asked for `{service}`",
                    socket.display(),
                    fds.len()
                ));
            }
            match addr {
                Some(addr) if count > 0 => Ok(Some(Sockets {
                    addr,
                    listeners: listeners_at(addr, fds)?,
                })),
                _ => Ok(None),
            }
        }
        Reply::Error { message } => Err(format!("{} refused: {message}", socket.display())),
        other => Err(format!(
            "{} answered {other:?} to `sockets`",
            socket.display()
        )),
    }
}

/// Whether a `sockets` request of protocol `asked` is answered here; the
/// refusal names both numbers.
pub(crate) fn check_protocol(asked: u32, who: &str) -> Result<(), String> {
    if asked == PROTOCOL {
        return Ok(());
    }
    Err(format!(
        "`sockets` asked in protocol {asked}; {who} speaks protocol {PROTOCOL}: no listening socket is handed over"
    ))
}

/// What a restarting data plane took over from its keeper.
#[derive(Debug, Default)]
pub struct TakenOver {
    /// The sockets of each saved service the keeper held at its address.
    pub sockets: BTreeMap<String, Sockets>,
    /// Why some or all were not (no keeper, another address, refused):
    /// those services bind new sockets.
    pub missed: Vec<String>,
}

/// Asks the keeper at `keeper` for the sockets of each of `services`
/// (name, saved address), at most [`TAKE_OVER_TIMEOUT`] in all. Nothing
/// listening there (no controller, or one that was killed) is no error:
/// every service binds new sockets then, as a first start does.
pub async fn take_over(keeper: &Path, services: &[(String, SocketAddr)]) -> TakenOver {
    let mut out = TakenOver::default();
    if services.is_empty() {
        return out;
    }
    if UnixStream::connect(keeper).await.is_err() {
        out.missed.push(format!(
            "no keeper of listening sockets on {}",
            keeper.display()
        ));
        return out;
    }
    let asked = async {
        for (service, saved) in services {
            match fetch(keeper, service).await {
                Ok(Some(s)) if s.addr == *saved => {
                    out.sockets.insert(service.clone(), s);
                }
                Ok(Some(s)) => out.missed.push(format!(
                    "the keeper holds `{service}` at {}, saved at {saved}",
                    s.addr
                )),
                Ok(None) => out
                    .missed
                    .push(format!("the keeper holds no socket of `{service}`")),
                Err(e) => out.missed.push(e),
            }
        }
    };
    if tokio::time::timeout(TAKE_OVER_TIMEOUT, asked)
        .await
        .is_err()
    {
        out.missed.push(format!(
            "the keeper on {} did not answer within {TAKE_OVER_TIMEOUT:?}",
            keeper.display()
        ));
    }
    out
}

/// The controller's duplicates of its data plane's listening sockets, by
/// service, and the server that hands them to a restarted data plane.
#[derive(Debug, Default)]
pub struct Keeper {
    held: std::sync::Mutex<BTreeMap<String, Sockets>>,
    /// One refresh at a time, so an older listing never replaces a newer.
    refreshing: tokio::sync::Mutex<()>,
}

impl Keeper {
    /// A keeper holding nothing.
    pub fn new() -> Arc<Keeper> {
        Arc::new(Keeper::default())
    }

    /// Takes duplicates of every listening socket of the data plane behind
    /// `client` and lets go of the ones held before. On a failure what was
    /// held stays held (a data plane that died mid-way left those sockets
    /// to the keeper alone). A data plane of an older protocol, which
    /// cannot hand its sockets over, is refused with both numbers.
    pub async fn refresh(&self, client: &ControlClient) -> Result<usize, ControlError> {
        let _one = self.refreshing.lock().await;
        let hello = client.hello().await?;
        let socket = client.socket().to_path_buf();
        if hello.protocol < PROTOCOL {
            return Err(ControlError::Protocol {
                socket,
                message: format!(
                    "the data plane (pid {}) speaks protocol {}, and handing its listening sockets over needs \
                     protocol {PROTOCOL}: a crash of it refuses connections until it is started again \
                     (stop it, and `hatoba up` starts a current one)",
                    hello.pid, hello.protocol
                ),
            });
        }
        let mut fresh = BTreeMap::new();
        for service in hello.services {
            match fetch(&socket, &service).await {
                Ok(Some(s)) => {
                    fresh.insert(service, s);
                }
                Ok(None) => {}
                Err(message) => return Err(ControlError::Protocol { socket, message }),
            }
        }
        let n = fresh.values().map(|s| s.listeners.len()).sum();
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(n)
    }

    /// Lets go of every socket: before the data plane is stopped for good
    /// (its ports must then refuse, not queue), or when a restart failed
    /// (a client waiting in a backlog nobody will serve had better be
    /// refused at once).
    pub fn clear(&self) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// What it holds: service, address, number of sockets.
    pub fn held(&self) -> Vec<(String, SocketAddr, usize)> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, s)| (name.clone(), s.addr, s.listeners.len()))
            .collect()
    }

    /// Serves the held sockets on `path` (mode 0600; a stale file is
    /// replaced) until the returned handle is dropped.
    pub async fn serve(self: &Arc<Keeper>, path: &Path) -> Result<KeeperServer, ControlError> {
        let (listener, file) = crate::control::claim_socket(path).await?;
        let keeper = Arc::clone(self);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors and the like: back off rather than spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                tokio::spawn(serve_keeper_connection(Arc::clone(&keeper), stream));
            }
        });
        Ok(KeeperServer { task, _file: file })
    }

    fn answer(&self, service: &str) -> (Reply, Vec<OwnedFd>) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(s) = held.get(service) else {
            return (
                Reply::Sockets {
                    service: service.to_owned(),
                    addr: None,
                    count: 0,
                },
                Vec::new(),
            );
        };
        match s.dup() {
            Ok(fds) => (
                Reply::Sockets {
                    service: service.to_owned(),
                    addr: Some(s.addr),
                    count: fds.len(),
                },
                fds,
            ),
            Err(e) => (
                Reply::Error {
                    message: format!("cannot duplicate the sockets of `{service}`: {e}"),
                },
                Vec::new(),
            ),
        }
    }
}

/// The keeper's server: stops (and removes its socket file) when dropped.
#[derive(Debug)]
pub struct KeeperServer {
    task: tokio::task::JoinHandle<()>,
    _file: crate::control::SocketFile,
}

impl Drop for KeeperServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One data plane asking the keeper: `hello` and `sockets` are answered,
/// anything else refused (the connection stays usable, as on the data
/// plane's socket).
async fn serve_keeper_connection(keeper: Arc<Keeper>, stream: UnixStream) {
    use crate::control::{LineError, MAX_LINE, read_line};
    let (read, write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    let mut line = Vec::new();
    loop {
        match read_line(&mut read, &mut line, MAX_LINE).await {
            Ok(true) => {}
            Ok(false) | Err(LineError::Io(_)) => return,
            Err(LineError::TooLong) => {
                let refused = Reply::Error {
                    message: format!(
                        "request line longer than {MAX_LINE} bytes; closing the connection"
                    ),
                };
                let _ = send_with_fds(write.as_ref(), &refused, &[]).await;
                return;
            }
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        let refuse = |message: String| (Reply::Error { message }, Vec::new());
        let (reply, fds) = match serde_json::from_slice::<Request>(&line) {
            Ok(Request::Sockets { service, protocol }) => {
                match check_protocol(protocol, "this controller's keeper") {
                    Ok(()) => keeper.answer(&service),
                    Err(message) => refuse(message),
                }
            }
            Ok(Request::Hello) => (
                Reply::Hello {
                    pid: std::process::id(),
                    protocol: PROTOCOL,
                    services: keeper.held().into_iter().map(|(s, _, _)| s).collect(),
                },
                Vec::new(),
            ),
            Ok(_) => refuse(
                "this is the controller's keeper of listening sockets: it answers `hello` and \
                 `sockets` only"
                    .to_owned(),
            ),
            Err(e) => refuse(format!("malformed request: {e}")),
        };
        if send_with_fds(write.as_ref(), &reply, &fds).await.is_err() {
            return;
        }
    }
}
