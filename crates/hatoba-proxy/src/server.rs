//! Listeners: thread-per-core serving of one address.
//!
//! Each of N threads runs a single-threaded tokio runtime with its own
//! `SO_REUSEPORT` listener on the same address, so the kernel spreads
//! connections across threads and a request never hops threads: accept,
//! parse, pick, forward and relay all happen on one core, with that core's
//! upstream connection pool. This is what lets a hyper proxy match nginx and
//! HAProxy on this hardware (see DEPENDENCIES.md §6). The kernel's choice of
//! listener is a hash, which leaves one thread with noticeably more
//! keep-alive connections than another; a thread that accepts while it
//! serves more than the least busy one hands the socket over (`Balance`).
//!
//! With TLS on, each accepted connection is handed to its own task that runs
//! the handshake (bounded by `header_read_timeout`, so a client that never
//! finishes it is dropped) and then serves HTTP/1.1 or HTTP/2 over it; the
//! accept loop never waits on a handshake. A failed handshake is a closed
//! connection, nothing more. Without TLS the accept loop is exactly the
//! plain one: no handshake task, no extra allocation or indirection.
//! Connections hyper serves get a send timeout (`send_timeout`); the plain
//! HTTP/1 path has its own.
//!
//! Shutdown is graceful and cuts nothing the kernel accepted: each socket
//! first stops completing handshakes (a socket filter dropping SYNs), every
//! connection queued on it is taken and served, every connection finishes
//! its current request (keep-alive connections close after it; one that
//! has not sent its first request yet gets to, and a TLS one finishes its
//! handshake first, both bounded by `header_read_timeout`), and the socket
//! closes only after a last sweep of its queue found it empty. New clients
//! see their SYN go unanswered, then refused once the socket closes.
//!
//! A listener also keeps a duplicate of each of its sockets, to hand over
//! ([`ProxyServer::sockets`], `crate::handover`); one started on sockets
//! handed to it ([`ProxyServer::adopt`]) runs one thread per socket. The
//! duplicates are let go first thing at shutdown, so a stopped listener's
//! port refuses rather than queues.

use crate::forward::{self, ProxyOptions};
use crate::h1::{self, Served};
use crate::pool;
use crate::send_timeout::SendTimeout;
use crate::table::Router;
use crate::tls::TlsSettings;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};

/// Largest request head accepted (request line and headers); larger gets 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long shutdown waits for connections to finish their request.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A running listener.
#[derive(Debug)]
pub struct ProxyServer {
    addr: SocketAddr,
    /// A duplicate of every socket, to hand over.
    kept: Vec<std::net::TcpListener>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

/// Binds `threads` sockets to one address with `SO_REUSEPORT`. Port 0 picks
/// a free port for the first and reuses it for the rest.
///
/// `SO_REUSEPORT` would let any other process of the same user join the
/// group and take a share of the connections (a second `hatoba up` with the
/// same `listen`), so a fixed address is first bound once without it: that
/// fails with `AddrInUse` when anything listens there already, ours or not.
pub(crate) fn bind_reuseport(
    listen: SocketAddr,
    threads: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    if listen.port() != 0 {
        let probe = socket2::Socket::new(
            socket2::Domain::for_address(listen),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        // Connections of an earlier run in TIME_WAIT are no owner.
        probe.set_reuse_address(true)?;
        probe.bind(&listen.into()).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "Address already in use (another process listens there: stop it, or listen on another address)",
                )
            } else {
                e
            }
        })?;
    }
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

/// A classic BPF program for a listening TCP socket that drops every
/// segment with SYN set and lets everything else through. A socket filter
/// on a TCP socket sees the segment from its TCP header, whose byte 13
/// holds the flags (SYN is 0x02). Dropping only SYNs (not everything)
/// lets a handshake already under way finish (its final ACK passes) and
/// its request arrive, so that connection is queued and served rather
/// than stranded half-open and reset when the socket closes.
const DROP_SYN: [socket2::SockFilter; 4] = [
    // ldb [13]: the TCP flags.
    socket2::SockFilter::new(0x30, 0, 0, 13),
    // jset #0x02: SYN set → next instruction (drop), else skip it (keep).
    socket2::SockFilter::new(0x45, 0, 1, 0x02),
    // ret #0: drop.
    socket2::SockFilter::new(0x06, 0, 0, 0),
    // ret #-1: keep the whole segment.
    socket2::SockFilter::new(0x06, 0, 0, u32::MAX),
];

/// Makes the kernel complete no new connection on `listener`: a client
/// connecting from now on has its SYN dropped (it retries, and is refused
/// once the socket closes) instead of being queued and then reset by the
/// close. Connections queued already stay queued, to be taken.
///
/// The filter belongs to the socket, so its duplicates (the ones kept to
/// hand over) have it too: [`ProxyServer::adopt`] takes it off again.
pub(crate) fn refuse_new_connections(listener: &std::net::TcpListener) -> io::Result<()> {
    socket2::SockRef::from(listener).attach_filter(&DROP_SYN)
}

/// Every connection queued on the non-blocking `listener` now, taken with
/// `accept` calls until the kernel says there is none left (or an error
/// other than an interruption: out of descriptors, say, which leaves the
/// rest where they are).
pub(crate) fn take_queued(
    listener: &std::net::TcpListener,
) -> Vec<(std::net::TcpStream, SocketAddr)> {
    let mut taken = Vec::new();
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if stream.set_nonblocking(true).is_ok() {
                    taken.push((stream, peer));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return taken,
        }
    }
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
        ProxyServer::run(listeners, router, opts)
    }

    /// Serves on sockets bound and listening already (handed over from a
    /// data plane that died: the connections queued on them are served),
    /// one thread per socket. They must all listen on one address.
    pub fn adopt(
        listeners: Vec<std::net::TcpListener>,
        router: Arc<Router>,
        opts: ProxyOptions,
    ) -> io::Result<ProxyServer> {
        for l in &listeners {
            l.set_nonblocking(true)?;
            // A data plane that stopped on them (SIGTERM while `hatoba up`
            // kept them) left its filter refusing new connections on them.
            let _ = socket2::SockRef::from(l).detach_filter();
        }
        ProxyServer::run(listeners, router, opts)
    }

    fn run(
        listeners: Vec<std::net::TcpListener>,
        router: Arc<Router>,
        opts: ProxyOptions,
    ) -> io::Result<ProxyServer> {
        let Some(first) = listeners.first() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a listener needs at least one socket",
            ));
        };
        let addr = first.local_addr()?;
        let threads = listeners.len();
        let kept = listeners
            .iter()
            .map(std::net::TcpListener::try_clone)
            .collect::<io::Result<Vec<_>>>()?;
        let (stop, stopped) = watch::channel(false);
        let opts = Arc::new(opts);
        let (balance, mut inboxes) = Balance::new(listeners.len());
        let mut handles = Vec::with_capacity(threads);
        for (i, l) in listeners.into_iter().enumerate() {
            let (router, opts, stopped) = (Arc::clone(&router), Arc::clone(&opts), stopped.clone());
            let (balance, inbox) = (Arc::clone(&balance), inboxes.remove(0));
            let handle = std::thread::Builder::new()
                .name(format!("hatoba-proxy-{i}"))
                .spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(serve(
                        l,
                        router,
                        opts,
                        stopped,
                        Lane {
                            me: i,
                            balance,
                            inbox,
                        },
                    ));
                })?;
            handles.push(handle);
        }
        Ok(ProxyServer {
            addr,
            kept,
            stop,
            threads: handles,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Duplicates of its sockets (one per thread), to hand to another
    /// process.
    pub fn sockets(&self) -> io::Result<Vec<std::os::fd::OwnedFd>> {
        self.kept
            .iter()
            .map(|l| l.try_clone().map(std::os::fd::OwnedFd::from))
            .collect()
    }

    /// Stops accepting, lets connections finish their current request (up
    /// to [`SHUTDOWN_GRACE`]) and waits for the threads.
    pub fn shutdown(self) {
        // Its own duplicates first: once the threads drop theirs, the port
        // refuses.
        drop(self.kept);
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Spreads connections evenly over the threads. The kernel picks a
/// `SO_REUSEPORT` listener by a hash of the client's address and port, so 50
/// keep-alive connections typically land 28 on one thread and 22 on the
/// other, and the busier thread's clients wait longer. A thread that accepts
/// a connection while it serves more than the least busy thread hands the
/// socket to that thread instead (a few system calls, once per connection).
struct Balance {
    open: Vec<AtomicUsize>,
    inboxes: Vec<mpsc::UnboundedSender<Handed>>,
}

/// A socket handed to another thread, already counted for it.
type Handed = (std::net::TcpStream, SocketAddr, Open);
type Inbox = mpsc::UnboundedReceiver<Handed>;

impl Balance {
    fn new(threads: usize) -> (Arc<Balance>, Vec<Inbox>) {
        let (senders, receivers) = (0..threads).map(|_| mpsc::unbounded_channel()).unzip();
        let balance = Balance {
            open: (0..threads).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: senders,
        };
        (Arc::new(balance), receivers)
    }

    /// The thread that should serve a connection accepted by `me`, already
    /// counted as serving it.
    /// Counts one more connection for thread `me` itself.
    fn mine(self: &Arc<Balance>, me: usize) -> Open {
        self.open[me].fetch_add(1, Ordering::Relaxed);
        Open(Arc::clone(self), me)
    }

    fn pick(self: &Arc<Balance>, me: usize) -> Open {
        let mine = self.open[me].load(Ordering::Relaxed);
        let least = (0..self.open.len())
            .min_by_key(|i| self.open[*i].load(Ordering::Relaxed))
            .filter(|i| self.open[*i].load(Ordering::Relaxed) < mine)
            .unwrap_or(me);
        self.open[least].fetch_add(1, Ordering::Relaxed);
        Open(Arc::clone(self), least)
    }
}

/// A connection counted as served by a thread until dropped.
struct Open(Arc<Balance>, usize);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

/// One thread's place in the balance: its index and the sockets other
/// threads hand it.
struct Lane {
    me: usize,
    balance: Arc<Balance>,
    inbox: Inbox,
}

async fn serve(
    listener: std::net::TcpListener,
    router: Arc<Router>,
    opts: Arc<ProxyOptions>,
    mut stopped: watch::Receiver<bool>,
    mut lane: Lane,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
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
    let mut conns = Conns {
        ctx,
        tls: opts.tls.as_ref().map(TlsSettings::acceptor),
        builder,
        h1,
        graceful: GracefulShutdown::new(),
        stopped: stopped.clone(),
        handshake_timeout: opts.header_read_timeout,
        send_timeout: opts.send_timeout,
    };
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = sweep.tick() => {
                let table = router.table();
                pool::retain(|addr| table.groups.iter().any(|g| g.backends.iter().any(|b| b.addr == addr)));
            }
            handed = lane.inbox.recv() => {
                let Some((stream, peer, open)) = handed else { continue };
                let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { continue };
                conns.spawn(stream, peer, open);
            }
            accepted = listener.accept() => {
                // Out of descriptors and the like: back off rather than spin.
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let open = lane.balance.pick(lane.me);
                if open.1 == lane.me {
                    conns.spawn(stream, peer, open);
                    continue;
                }
                if let Ok(stream) = stream.into_std() {
                    // A thread that stopped taking sockets hands it back:
                    // served here rather than dropped unanswered.
                    if let Err(back) = lane.balance.inboxes[open.1].send((stream, peer, open)) {
                        let (stream, peer, open) = back.0;
                        if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                            conns.spawn(stream, peer, open);
                        }
                    }
                }
            }
        }
    }
    // A stop cuts no request. Closing a listening socket resets every
    // connection queued on it, and those clients have already sent their
    // request: to the client that is a cut, not a refusal. So, in order:
    // 1. the kernel stops completing new handshakes on this socket
    //    (`refuse_new_connections`): from here a new client's SYN is
    //    dropped, it retries, and is refused once the socket closes;
    // 2. the sockets other threads handed this one are served;
    // 3. every connection the kernel queued is taken, with real `accept`
    //    calls until the queue is empty (tokio's cached readiness may not
    //    know yet of the last ones to arrive);
    // only then does the socket close (after the rounds below). Serving
    // them is only spawning: each finishes its request under the graceful
    // shutdown (`h1::serve` waits for the first request of a connection
    // even while stopping).
    let listener = listener.into_std();
    if let Ok(l) = &listener {
        // Not expected to fail on Linux; if it did, the stop would keep
        // the window the filter closes (a connection queued after the
        // last accept is reset), no worse than without it.
        let _ = refuse_new_connections(l);
    }
    lane.inbox.close();
    while let Ok((stream, peer, open)) = lane.inbox.try_recv() {
        if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
            conns.spawn(stream, peer, open);
        }
    }
    if let Ok(l) = &listener {
        for (stream, peer) in take_queued(l) {
            if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                conns.spawn(stream, peer, lane.balance.mine(lane.me));
            }
        }
    }
    h1::stop_this_thread();
    // A handshake under way when the filter went on still completes (its
    // final ACK passes) and its client, whose side is connected, sends its
    // request: the socket stays open while the connections taken finish,
    // and what queued meanwhile is taken and served in turn. No new
    // handshake starts, so this ends; the last sweep found the queue
    // empty right before the close.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    loop {
        let round = std::mem::replace(&mut conns.graceful, GracefulShutdown::new());
        let _ = tokio::time::timeout_at(deadline, round.shutdown()).await;
        let late = listener.as_ref().map(take_queued).unwrap_or_default();
        if late.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        for (stream, peer) in late {
            if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                conns.spawn(stream, peer, lane.balance.mine(lane.me));
            }
        }
    }
    drop(listener);
}

/// What serving a connection needs, one per thread.
struct Conns {
    ctx: Arc<forward::Ctx>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    h1: Arc<http1::Builder>,
    graceful: GracefulShutdown,
    stopped: watch::Receiver<bool>,
    handshake_timeout: Duration,
    send_timeout: Duration,
}

impl Conns {
    /// Serves one client connection in a task of its own; `open` counts it
    /// for this thread until it closes.
    fn spawn(&self, stream: tokio::net::TcpStream, peer: SocketAddr, open: Open) {
        let _ = stream.set_nodelay(true);
        let (handshake_timeout, send_timeout) = (self.handshake_timeout, self.send_timeout);
        let peer = forward::Peer::new(peer);
        let service = {
            let ctx = Arc::clone(&self.ctx);
            service_fn(move |req| forward::handle(req, Arc::clone(&ctx), peer))
        };
        let Some(acceptor) = &self.tls else {
            // Plain HTTP: served by `h1` until it meets something it leaves
            // to hyper (an upgrade, h2c, a head it does not take).
            let (ctx, h1, builder, watcher, mut stop) = (
                Arc::clone(&self.ctx),
                Arc::clone(&self.h1),
                Arc::clone(&self.builder),
                self.graceful.watcher(),
                self.stopped.clone(),
            );
            tokio::spawn(async move {
                let _open = open;
                match h1::serve(stream, &ctx, peer).await {
                    Served::Closed => {}
                    Served::Http2(io) => {
                        // Boxed: rare, and keeps every HTTP/1 task small.
                        let io = TokioIo::new(SendTimeout::new(io, send_timeout));
                        let conn = builder
                            .serve_connection_with_upgrades(io, service)
                            .into_owned();
                        let _ = Box::pin(watcher.watch(conn)).await;
                    }
                    Served::Http1(io) => {
                        let io = TokioIo::new(SendTimeout::new(io, send_timeout));
                        let conn = h1.serve_connection(io, service).with_upgrades();
                        let mut conn = Box::pin(conn);
                        tokio::select! {
                            // The connection first: hyper takes the head
                            // `h1` read already before a stop asks it to
                            // end, or it would close (reset) a connection
                            // it has seen no request on.
                            biased;
                            // A broken client connection is the client's business.
                            _ = conn.as_mut() => return,
                            _ = stop.wait_for(|stop| *stop) => conn.as_mut().graceful_shutdown(),
                        }
                        let _ = conn.await;
                        // Held until here so that shutdown waits for this connection.
                        drop(watcher);
                    }
                }
            });
            return;
        };
        let (acceptor, builder, watcher, mut stop) = (
            acceptor.clone(),
            Arc::clone(&self.builder),
            self.graceful.watcher(),
            self.stopped.clone(),
        );
        tokio::spawn(async move {
            let _open = open;
            // A client that sends no ClientHello, garbage, or never
            // finishes the handshake just gets its connection closed. A
            // stop does not end a handshake: the proxy accepted the
            // connection, so its client is owed an answer (the timeout
            // still bounds the wait).
            let Ok(Ok(stream)) =
                tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
            else {
                return;
            };
            let heard = Arc::new(AtomicBool::new(false));
            let io = Heard {
                inner: SendTimeout::new(stream, send_timeout),
                heard: Arc::clone(&heard),
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            drop(builder);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                // The connection first, as on the plain path.
                biased;
                // A broken client connection is the client's business.
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|stop| *stop) => {}
            }
            // hyper's graceful shutdown closes a connection it has read
            // nothing on yet (HTTP/1 and before the protocol is known), so
            // it is asked only once the first request's bytes have been
            // read: they are in hyper's buffer then, and it answers them
            // (HTTP/2 goes on with the streams opened before its GOAWAY;
            // only a client whose preface came split over several TLS
            // records would still be closed). Bounded like the handshake.
            let first = std::future::poll_fn(|cx| match conn.as_mut().poll(cx) {
                Poll::Ready(_) => Poll::Ready(true),
                Poll::Pending if heard.load(Ordering::Relaxed) => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            });
            if let Ok(true) = tokio::time::timeout(handshake_timeout, first).await {
                return;
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
            // Held until here so that shutdown waits for this connection.
            drop(watcher);
        });
    }
}

/// A TLS connection's stream that notes when the first bytes from the
/// client have been read (see the TLS branch of [`Conns::spawn`]).
struct Heard<S> {
    inner: S,
    heard: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Heard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.heard.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Heard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_another_group_listens_on_is_refused() {
        let first = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = first[0].local_addr().unwrap();
        // Another process of the same user would join with SO_REUSEPORT.
        let second = bind_reuseport(addr, 2);
        assert_eq!(
            second.map(|_| ()).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        drop(first);
        // Once it is free, it binds again.
        assert_eq!(bind_reuseport(addr, 2).unwrap().len(), 2);
    }

    #[test]
    fn a_listener_refusing_new_connections_still_hands_over_the_queued_ones() {
        use std::io::{Read as _, Write as _};
        let listener = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1)
            .unwrap()
            .remove(0);
        let addr = listener.local_addr().unwrap();
        let mut queued = std::net::TcpStream::connect(addr).unwrap();
        queued.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        refuse_new_connections(&listener).unwrap();
        // No handshake completes now: its SYN is dropped. On loopback a
        // listener answers a SYN within microseconds, and a client retries
        // only after a second, so 300 ms without a connection is the drop.
        let late = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert_eq!(late.unwrap_err().kind(), io::ErrorKind::TimedOut);
        // The connection queued before is still there, request and all.
        let mut taken = take_queued(&listener);
        assert_eq!(taken.len(), 1);
        let (mut stream, _) = taken.remove(0);
        stream.set_nonblocking(false).unwrap();
        let mut request = [0u8; 18];
        stream.read_exact(&mut request).unwrap();
        assert_eq!(&request, b"GET / HTTP/1.1\r\n\r\n");
        // Closed: refused, not queued.
        drop(listener);
        let closed = std::net::TcpStream::connect(addr).map(|_| ());
        assert_eq!(closed.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn connections_go_to_the_least_busy_thread_and_are_released() {
        let (balance, _inboxes) = Balance::new(3);
        // Thread 0 accepts everything: it keeps one, then spreads the rest.
        let held: Vec<Open> = (0..9).map(|_| balance.pick(0)).collect();
        let count = |i: usize| balance.open[i].load(Ordering::Relaxed);
        assert_eq!((count(0), count(1), count(2)), (3, 3, 3));
        assert_eq!(held[0].1, 0, "the first stays where it was accepted");
        // Closing thread 2's connections makes it the one to get the next.
        let (on_two, rest): (Vec<Open>, Vec<Open>) = held.into_iter().partition(|o| o.1 == 2);
        drop(on_two);
        assert_eq!(count(2), 0);
        let next = balance.pick(1);
        assert_eq!(next.1, 2);
        drop(rest);
        drop(next);
        assert_eq!((count(0), count(1), count(2)), (0, 0, 0));
    }
}
