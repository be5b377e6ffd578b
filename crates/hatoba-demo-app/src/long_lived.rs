//! The long-lived endpoints, for tests and benchmarks of drains:
//!
//! - `/ws` is a WebSocket that echoes every message (text or binary) and
//!   sends `VERSION tick N` every tick (N from 1);
//! - `/stream` is an event stream of `data: VERSION tick N` every tick;
//! - `POST /drain` is the drain notify: every WebSocket gets a close frame
//!   (1001, going away) and the closing handshake, every event stream an
//!   `event: reconnect` (and stays open: the client decides when to go).
//!
//! At shutdown, WebSockets are closed the same way and event streams end
//! after an `event: close`; [`LongLived::closed`] waits for the WebSockets.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha1::Digest as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};

/// The largest WebSocket frame read; a bigger one closes with 1009.
const MAX_FRAME: u64 = 64 * 1024;

/// How long a closing WebSocket waits for the client's close frame, and
/// then for its end of the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The state the long-lived endpoints share.
pub(crate) struct LongLived {
    version: String,
    tick: Duration,
    /// Set by `POST /drain`.
    notified: watch::Sender<bool>,
    /// Set when the server shuts down.
    closing: watch::Sender<bool>,
    /// WebSockets open now.
    open: watch::Sender<usize>,
}

impl LongLived {
    pub(crate) fn new(version: &str, tick: Duration) -> LongLived {
        LongLived {
            version: version.to_owned(),
            tick: tick.max(Duration::from_millis(1)),
            notified: watch::Sender::new(false),
            closing: watch::Sender::new(false),
            open: watch::Sender::new(0),
        }
    }

    /// The drain notify: asks every client to go elsewhere.
    pub(crate) fn notify(&self) {
        self.notified.send_replace(true);
    }

    /// Shutdown: closes every WebSocket, ends every event stream.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Returns once every WebSocket has closed.
    pub(crate) async fn closed(&self) {
        let _ = self.open.subscribe().wait_for(|n| *n == 0).await;
    }

    /// `GET /stream`: ticks until shutdown.
    pub(crate) fn stream(&self) -> Response<Events> {
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let version = self.version.clone();
        let mut tick = tokio::time::interval(self.tick);
        let mut notified = self.notified.subscribe();
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut told = false;
            loop {
                let event = tokio::select! {
                    biased;
                    () = set(&mut closing) => {
                        let _ = tx.send(format!("event: close\ndata: {version}\n\n").into()).await;
                        // Dropping the sender ends the body.
                        return;
                    }
                    () = set(&mut notified), if !told => {
                        told = true;
                        format!("event: reconnect\ndata: {version}\n\n")
                    }
                    _ = tick.tick() => {
                        n += 1;
                        format!("data: {version} tick {n}\n\n")
                    }
                };
                if tx.send(event.into()).await.is_err() {
                    // The client left.
                    return;
                }
            }
        });
        let mut r = Response::new(Events(Some(rx)));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r
    }

    /// `GET /ws`: the handshake, and the WebSocket once upgraded.
    pub(crate) fn websocket(self: &Arc<Self>, mut req: Request<Incoming>) -> Response<Events> {
        let upgrade = req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let key = req.headers().get("sec-websocket-key").cloned();
        let (true, Some(key)) = (upgrade, key) else {
            let mut r = Response::new(Events::done());
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        };
        let mut sha = sha1::Sha1::new();
        sha.update(key.as_bytes());
        sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
        let on_upgrade = hyper::upgrade::on(&mut req);
        let me = Arc::clone(self);
        me.open.send_modify(|n| *n += 1);
        tokio::spawn(async move {
            if let Ok(io) = on_upgrade.await {
                me.session(TokioIo::new(io)).await;
            }
            me.open.send_modify(|n| *n -= 1);
        });
        let mut r = Response::new(Events::done());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(SEC_WEBSOCKET_ACCEPT, v);
        }
        r
    }

    async fn session<T: AsyncRead + AsyncWrite + Send + 'static>(&self, io: T) {
        let (mut rd, mut wr) = tokio::io::split(io);
        let (tx, mut frames) = mpsc::channel::<io::Result<WsFrame>>(8);
        let reader = tokio::spawn(async move {
            loop {
                let frame = read_frame(&mut rd).await;
                let failed = frame.is_err();
                if tx.send(frame).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut tick = tokio::time::interval(self.tick);
        let mut notified = self.notified.subscribe();
        let mut closing = self.closing.subscribe();
        let mut n = 0u64;
        let ours = loop {
            let out = tokio::select! {
                biased;
                () = set(&mut closing) => break true,
                () = set(&mut notified) => break true,
                frame = frames.recv() => match frame {
                    Some(Ok(f)) if f.opcode == OP_CLOSE => {
                        // The client closes: answer with its status.
                        let status = f.payload.get(..2).unwrap_or(&[0x03, 0xe8]).to_vec();
                        let _ = wr.write_all(&encode(OP_CLOSE, &status)).await;
                        break false;
                    }
                    Some(Ok(f)) if f.opcode == OP_PING => encode(OP_PONG, &f.payload),
                    Some(Ok(f)) if f.opcode == OP_PONG => continue,
                    Some(Ok(f)) => encode_raw(f.first, &f.payload),
                    Some(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                        // 1009: too big to handle.
                        let _ = wr.write_all(&encode(OP_CLOSE, &[0x03, 0xf1])).await;
                        break false;
                    }
                    // The client left without a close frame.
                    Some(Err(_)) | None => break false,
                },
                _ = tick.tick() => {
                    n += 1;
                    encode(OP_TEXT, format!("{} tick {n}", self.version).as_bytes())
                }
            };
            if wr.write_all(&out).await.is_err() {
                break false;
            }
        };
        if ours {
            // 1001, going away; then wait for the client's close frame.
            if wr.write_all(&encode(OP_CLOSE, &[0x03, 0xe9])).await.is_ok() {
                let _ = tokio::time::timeout(CLOSE_WAIT, async {
                    while let Some(Ok(f)) = frames.recv().await {
                        if f.opcode == OP_CLOSE {
                            return;
                        }
                    }
                })
                .await;
            }
        }
        // Close our side, then read to the client's end, so nothing the
        // client sent is left unread (which would make the close a reset).
        let _ = wr.shutdown().await;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(_)) = frames.recv().await {}
        })
        .await;
        reader.abort();
    }
}

/// Returns once the flag is set (or its sender is gone).
async fn set(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// One WebSocket frame as read: its first byte (FIN and opcode) and its
/// unmasked payload.
struct WsFrame {
    first: u8,
    opcode: u8,
    payload: Vec<u8>,
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<WsFrame> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too big"));
    }
    let mut mask = [0u8; 4];
    let masked = head[1] & 0x80 != 0;
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0)];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(WsFrame {
        first: head[0],
        opcode: head[0] & 0x0f,
        payload,
    })
}

/// A whole (FIN) server frame: unmasked.
fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_raw(0x80 | opcode, payload)
}

fn encode_raw(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first & 0x8f];
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A body sent as it is produced: an event stream, or nothing.
pub(crate) struct Events(Option<mpsc::Receiver<Bytes>>);

impl Events {
    /// An empty body.
    fn done() -> Events {
        Events(None)
    }
}

impl hyper::body::Body for Events {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().0 {
            Some(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.0 {
            Some(_) => hyper::body::SizeHint::default(),
            None => hyper::body::SizeHint::with_exact(0),
        }
    }
}
