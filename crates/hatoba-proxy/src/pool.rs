//! Upstream connections: HTTP/1.1 keep-alive connections to backends, kept
//! per thread.
//!
//! Each proxy thread runs its own single-threaded runtime, so its pool is a
//! thread-local with no lock: a connection is taken out for one request and
//! put back when the response body has been read to its end. A connection to
//! a backend that was removed from the route table is not put back, which
//! closes it after its last request. A service has a handful of backends:
//! they are found by a scan of a short list, cheaper than hashing an address
//! twice per request.

use crate::client::Conn;
use std::cell::RefCell;
use std::net::SocketAddr;

/// Idle connections kept per backend per thread; more are closed.
const MAX_IDLE_PER_BACKEND: usize = 256;

thread_local! {
    static POOL: RefCell<Vec<(SocketAddr, Vec<Conn>)>> = const { RefCell::new(Vec::new()) };
}

/// An idle connection to `addr`, if this thread has one that is still open.
pub(crate) fn checkout(addr: SocketAddr) -> Option<Conn> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let (_, idle) = p.iter_mut().find(|(a, _)| *a == addr)?;
        while let Some(c) = idle.pop() {
            if c.is_idle_open() {
                return Some(c);
            }
        }
        None
    })
}

/// Returns a connection whose last exchange ended cleanly, for reuse.
pub(crate) fn checkin(addr: SocketAddr, mut conn: Conn) {
    conn.reused = true;
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let idle = match p.iter().position(|(a, _)| *a == addr) {
            Some(i) => &mut p[i].1,
            None => {
                p.push((addr, Vec::new()));
                let last = p.len() - 1;
                &mut p[last].1
            }
        };
        if idle.len() < MAX_IDLE_PER_BACKEND {
            idle.push(conn);
        }
    });
}

/// Closes this thread's idle connections to backends not in `keep`, and
/// those their backend has closed.
pub(crate) fn retain(keep: impl Fn(SocketAddr) -> bool) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.retain(|(addr, _)| keep(*addr));
        for (_, idle) in p.iter_mut() {
            idle.retain(Conn::is_idle_open);
        }
    });
}
