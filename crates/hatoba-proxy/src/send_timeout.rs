//! A send timeout for connections hyper serves (HTTP/2, TLS, and plain
//! HTTP/1 handed over to hyper), which have none of their own: a write to
//! the client that makes no progress for `send_timeout` fails with
//! `TimedOut`, and hyper closes the connection. Like nginx's `send_timeout`,
//! the clock runs only while a write waits, and restarts at each write that
//! goes through; a client that reads slowly but steadily is served.
//!
//! The plain HTTP/1 path (`h1`) arms its own timer in `flush`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `S` with a bound on how long a write may wait.
pub(crate) struct SendTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write first waits; dropped when one goes through.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> SendTimeout<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> SendTimeout<S> {
        SendTimeout {
            inner,
            timeout,
            timer: None,
        }
    }

    /// What a write that returned `polled` means once the timer is counted.
    fn judge<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.timer = None;
            return polled;
        }
        let timeout = self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing for the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.judge(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.judge(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.judge(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.judge(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_too_long_fails_and_progress_restarts_the_clock() {
        // 64 KiB of pipe that nobody reads.
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut w = SendTimeout::new(client, Duration::from_secs(60));
        w.write_all(&[0u8; 64 * 1024]).await.unwrap();
        // Full: the next write waits, then fails at the timeout.
        let started = tokio::time::Instant::now();
        let err = w.write_all(b"more").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));

        // A reader that takes 8 KiB every 50 s keeps the writer going.
        let (client, mut server2) = tokio::io::duplex(8 * 1024);
        drop(server);
        let mut w = SendTimeout::new(client, Duration::from_secs(60));
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut got = 0;
            let mut buf = vec![0u8; 8 * 1024];
            while got < 64 * 1024 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                got += server2.read(&mut buf).await.unwrap();
            }
            got
        });
        w.write_all(&[1u8; 64 * 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 64 * 1024);
    }
}
