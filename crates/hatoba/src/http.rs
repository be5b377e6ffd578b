//! A small HTTP/1.1 client for the demo: probes and live traffic over
//! keep-alive connections to loopback addresses. Not a general client.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One keep-alive connection per address, opened on first use and reopened
/// after an error.
#[derive(Default)]
pub(crate) struct Client {
    conns: HashMap<SocketAddr, SendRequest<Empty<Bytes>>>,
}

/// What one request got back.
pub(crate) struct Answer {
    pub(crate) status: u16,
}

impl Client {
    /// GET `path` from `addr`, within `timeout`.
    pub(crate) async fn get(
        &mut self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<Answer> {
        let result = tokio::time::timeout(timeout, self.get_inner(addr, path)).await;
        match result {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                self.conns.remove(&addr);
                Err(e)
            }
            Err(_) => {
                self.conns.remove(&addr);
                anyhow::bail!("no answer from {addr} within {timeout:?}")
            }
        }
    }

    async fn get_inner(&mut self, addr: SocketAddr, path: &str) -> anyhow::Result<Answer> {
        if self.conns.get(&addr).is_none_or(|c| c.is_closed()) {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.conns.insert(addr, send);
        }
        let Some(send) = self.conns.get_mut(&addr) else {
            anyhow::bail!("no connection to {addr}")
        };
        send.ready().await?;
        let req = hyper::Request::get(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await?;
        let status = resp.status().as_u16();
        // Read the body to its end so the connection can carry the next request.
        resp.into_body().collect().await?;
        Ok(Answer { status })
    }
}
