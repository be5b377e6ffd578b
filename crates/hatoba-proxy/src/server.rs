//! Listeners: thread-per-core serving of one address.
//!
//! Each of N threads runs a single-threaded tokio runtime with its own
//! `SO_REUSEPORT` listener on the same address, so the kernel spreads
//! connections across threads and a request never hops threads: accept,
//! parse, pick, forward and relay all happen on one core, with that core's
//! upstream connection pool. This is what lets a hyper proxy match nginx and
//! HAProxy on this hardware (see DEPENDENCIES.md §6).
//!
//! With TLS on, each accepted connection is handed to its own task that runs
//! the handshake (bounded by `header_read_timeout`, so a client that never
//! finishes it is dropped) and then serves HTTP/1.1 or HTTP/2 over it; the
//! accept loop never waits on a handshake. A failed handshake is a closed
//! connection, nothing more. Without TLS the accept loop is exactly the
//! plain one: no handshake task, no extra allocation or indirection.
//!
//! Shutdown is graceful: stop accepting, let every connection finish its
//! current request (keep-alive connections close after it), then return.

use crate::forward::{self, ProxyOptions};
use crate::pool;
use crate::table::Router;
use crate::tls::TlsSettings;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

/// Largest request head accepted (request line and headers); larger gets 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// What an HTTP/2 client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long shutdown waits for connections to finish their request.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A running listener.
#[derive(Debug)]
pub struct ProxyServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

/// Binds `threads` sockets to one address with `SO_REUSEPORT`. Port 0 picks
/// a free port for the first and reuses it for the rest.
pub(crate) fn bind_reuseport(
    listen: SocketAddr,
    threads: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(threads);
    let mut addr = listen;
    for _ in 0..threads.max(1) {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let l: std::net::TcpListener = socket.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

impl ProxyServer {
    /// Starts serving `listen` with `threads` threads (0 means one per core).
    pub fn start(
        listen: SocketAddr,
        router: Arc<Router>,
        opts: ProxyOptions,
        threads: usize,
    ) -> io::Result<ProxyServer> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let listeners = bind_reuseport(listen, threads)?;
        let addr = listeners[0].local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let opts = Arc::new(opts);
        let mut handles = Vec::with_capacity(threads);
        for (i, l) in listeners.into_iter().enumerate() {
            let (router, opts, stopped) = (Arc::clone(&router), Arc::clone(&opts), stopped.clone());
            let handle = std::thread::Builder::new()
                .name(format!("hatoba-proxy-{i}"))
                .spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(serve(l, router, opts, stopped));
                })?;
            handles.push(handle);
        }
        Ok(ProxyServer {
            addr,
            stop,
            threads: handles,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets connections finish their current request (up
    /// to [`SHUTDOWN_GRACE`]) and waits for the threads.
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    router: Arc<Router>,
    opts: Arc<ProxyOptions>,
    mut stopped: watch::Receiver<bool>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let tls = opts.tls.as_ref().map(TlsSettings::acceptor);
    // One per thread: the reference count each request takes stays on this core.
    let ctx = Arc::new(forward::Ctx {
        router: Arc::clone(&router),
        opts: ProxyOptions::clone(&opts),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX));
    // Shared with the handshake tasks of TLS connections.
    let builder = Arc::new(builder);
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        // Enforced however the head arrives, not only when it overflows the buffer.
        .max_header_size(MAX_HEADER_BYTES)
        .writev(false)
        .keep_alive(true);
    let h1 = Arc::new(h1);
    let graceful = GracefulShutdown::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = sweep.tick() => {
                let table = router.table();
                pool::retain(|addr| table.groups.iter().any(|g| g.backends.iter().any(|b| b.addr == addr)));
            }
            accepted = listener.accept() => {
                // Out of descriptors and the like: back off rather than spin.
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let handshake_timeout = opts.header_read_timeout;
                let ctx = Arc::clone(&ctx);
                let peer = forward::Peer::new(peer);
                let service = service_fn(move |req| forward::handle(req, Arc::clone(&ctx), peer));
                let Some(acceptor) = &tls else {
                    // Plain HTTP: HTTP/1.1 is served by hyper's http1 connection
                    // directly (smaller per connection, no version sniffing on
                    // every read); only a client that opens with the HTTP/2
                    // preface (h2c prior knowledge) gets the auto builder.
                    let (h1, builder, watcher, mut stop) =
                        (Arc::clone(&h1), Arc::clone(&builder), graceful.watcher(), stopped.clone());
                    tokio::spawn(async move {
                        let mut head = [0u8; H2_PREFACE.len()];
                        let n = tokio::select! {
                            peeked = tokio::time::timeout(handshake_timeout, stream.peek(&mut head)) => match peeked {
                                Ok(Ok(n)) if n > 0 => n,
                                _ => return,
                            },
                            _ = stop.wait_for(|stop| *stop) => return,
                        };
                        if H2_PREFACE.starts_with(&head[..n]) {
                            // Boxed: rare, and keeps every HTTP/1 task small.
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                            drop(builder);
                            let _ = Box::pin(watcher.watch(conn)).await;
                            return;
                        }
                        drop(builder);
                        let conn = h1.serve_connection(TokioIo::new(stream), service).with_upgrades();
                        drop(h1);
                        let mut conn = std::pin::pin!(conn);
                        tokio::select! {
                            // A broken client connection is the client's business.
                            _ = conn.as_mut() => return,
                            _ = stop.wait_for(|stop| *stop) => conn.as_mut().graceful_shutdown(),
                        }
                        let _ = conn.await;
                        // Held until here so that shutdown waits for this connection.
                        drop(watcher);
                    });
                    continue;
                };
                let (acceptor, builder, watcher, mut stop) =
                    (acceptor.clone(), Arc::clone(&builder), graceful.watcher(), stopped.clone());
                tokio::spawn(async move {
                    // A client that sends no ClientHello, garbage, or never
                    // finishes the handshake just gets its connection closed.
                    let stream = tokio::select! {
                        done = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)) => match done {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(_)) | Err(_) => return,
                        },
                        _ = stop.wait_for(|stop| *stop) => return,
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                    drop(builder);
                    let _ = watcher.watch(conn).await;
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}
