//! Hatoba's data plane: the reverse proxy that carries users' traffic and
//! moves it between versions.
//!
//! - `table`: the immutable route table (groups by role and version, with
//!   weights) and the `Router` that swaps tables atomically (invariant 5).
//! - `server`: thread-per-core listeners (`SO_REUSEPORT`), HTTP/1.1 and
//!   h2c, or HTTPS (h2 and http/1.1 by ALPN), graceful shutdown.
//! - `tls`: TLS termination with rustls (ring): certificate and key from PEM.
//! - `forward`: the request path: group by pin header, sticky cookie or
//!   weight; backend by power of two choices; retries of what is safe to
//!   retry; forwarded headers; JSON 502/503/504 answers.
//! - `h1`: plain HTTP/1.x from clients, parsed and answered by the proxy
//!   itself; upgrades, h2c and unusual or malformed heads go to hyper.
//! - `head`: request and answer heads read as bytes, from hyper's header
//!   map or straight from what arrived.
//! - `client`: upstream HTTP/1.1 driven inline by the request's task (no
//!   connection task, no channels); request heads written straight from the
//!   client's headers.
//! - `pool`: per-thread upstream keep-alive connections.
//! - `body`: response bodies that record outcome and latency into
//!   `hatoba-metrics` when they end.
//! - `upgrade`: WebSocket pass-through.
//! - `admin`: `/metrics`, `/routes`, `/healthz`.
//! - `control`: the data plane as its own process, driven over a Unix socket.
//! - `handover`: listening sockets passed between processes (`SCM_RIGHTS`),
//!   kept by the controller so a killed data plane refuses no connection.
//! - `routes_file`: the file format of `hatoba proxy --routes`.
//!
//! The proxy decides nothing about rollouts: it routes by the table it is
//! given and reports what it measured.

mod admin;
mod body;
mod client;
pub mod control;
mod forward;
mod h1;
pub mod handover;
mod head;
mod pool;
mod routes_file;
mod send_timeout;
mod server;
mod table;
mod tls;
mod upgrade;

pub use admin::AdminServer;
pub use body::{ProxyBody, Tracked};
pub use control::{
    ControlClient, ControlError, DataPlane, DataPlaneConfig, DataPlaneState, DrainReport,
    ServiceEntry,
};
pub use forward::{ProxyOptions, ROUTE_HEADER, STICKY_COOKIE};
pub use routes_file::{GroupEntry, RoleName, RoutesFile, RoutesFileError};
pub use server::{MAX_HEADER_BYTES, ProxyServer, SHUTDOWN_GRACE};
pub use table::{Backend, Group, GroupSpec, RouteError, RouteSpec, RouteTable, Router};
pub use tls::{TlsConfig, TlsError, TlsSettings, load_tls};

use hatoba_core::Millis;
use std::cell::Cell;

/// Now, as the metrics want it. The proxy is the IO edge: it reads the
/// clock once per request.
pub(crate) fn now_millis() -> Millis {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    (t ^ (&local as *const u8 as u64).rotate_left(32)) | 1
}

/// A fast thread-local xorshift: picking groups and backends, request ids.
/// Not for anything secret.
pub(crate) fn rand_u64() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x
    })
}

/// Uniform-enough in `0..n` (n > 0).
pub(crate) fn rand_below(n: u32) -> u32 {
    (((rand_u64() >> 32) * u64::from(n)) >> 32) as u32
}
