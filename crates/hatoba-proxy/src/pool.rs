//! Upstream connections: HTTP/1.1 keep-alive connections to backends, kept
//! per thread.
//!
//! Each proxy thread runs its own single-threaded runtime, so its pool is a
//! thread-local with no lock: a connection is taken out for one request and
//! put back when the response body has been read to its end. A connection to
//! a backend that was removed from the route table is not put back, which
//! closes it gracefully after its last request.

use crate::body::UpBody;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Idle connections kept per backend per thread; more are closed.
const MAX_IDLE_PER_BACKEND: usize = 256;

pub(crate) type Sender = SendRequest<UpBody>;

thread_local! {
    static POOL: RefCell<HashMap<SocketAddr, Vec<Sender>>> = RefCell::new(HashMap::new());
}

/// An idle connection to `addr`, if this thread has one that is still open.
pub(crate) fn checkout(addr: SocketAddr) -> Option<Sender> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let idle = p.get_mut(&addr)?;
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    })
}

/// Returns a connection for reuse.
pub(crate) fn checkin(addr: SocketAddr, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let idle = p.entry(addr).or_default();
        if idle.len() < MAX_IDLE_PER_BACKEND {
            idle.push(sender);
        }
    });
}

/// Closes this thread's idle connections to backends not in `keep`.
pub(crate) fn retain(keep: impl Fn(SocketAddr) -> bool) {
    POOL.with(|p| p.borrow_mut().retain(|addr, _| keep(*addr)));
}

/// Why a new connection could not be made. Nothing was sent: always safe to
/// retry elsewhere.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect to {addr} failed")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {addr} timed out after {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("HTTP handshake with {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

/// Opens a new keep-alive connection to `addr`.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake::<_, UpBody>(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    tokio::spawn(async move {
        // Ends when the backend closes or the last sender is dropped.
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}
