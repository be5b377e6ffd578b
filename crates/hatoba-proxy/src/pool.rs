//! Upstream connections: HTTP/1.1 keep-alive connections to backends, kept
//! per thread.
//!
//! Each proxy thread runs its own single-threaded runtime, so its pool is a
//! thread-local with no lock: a connection is taken out for one request and
//! put back when the response body has been read to its end. A connection to
//! a backend that was removed from the route table is not put back, which
//! closes it after its last request.

use crate::client::Conn;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Idle connections kept per backend per thread; more are closed.
const MAX_IDLE_PER_BACKEND: usize = 256;

thread_local! {
    static POOL: RefCell<HashMap<SocketAddr, Vec<Conn>>> = RefCell::new(HashMap::new());
}

/// An idle connection to `addr`, if this thread has one that is still open.
pub(crate) fn checkout(addr: SocketAddr) -> Option<Conn> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let idle = p.get_mut(&addr)?;
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
        let idle = p.entry(addr).or_default();
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
        p.retain(|addr, _| keep(*addr));
        for idle in p.values_mut() {
            idle.retain(Conn::is_idle_open);
        }
    });
}
