//! Counting open client connections per protocol, for `wharf_connections{protocol=…}`.
//!
//! The count lives in the stream itself: one is added when a connection is accepted and taken
//! away when its stream is dropped, however the connection ends, so the gauge cannot drift.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Open connections of one protocol.
pub type ConnectionGauge = Arc<AtomicU64>;

/// A TCP listener whose accepted streams count themselves in a gauge.
pub struct CountedListener {
    inner: TcpListener,
    open: ConnectionGauge,
}

impl CountedListener {
    pub fn new(inner: TcpListener, open: ConnectionGauge) -> Self {
        CountedListener { inner, open }
    }
}

impl axum::serve::Listener for CountedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    // Request/response protocols: a reply should leave at once, not wait for
                    // Nagle's algorithm to coalesce it with bytes that will never come.
                    let _ = stream.set_nodelay(true);
                    self.open.fetch_add(1, Ordering::Relaxed);
                    return (CountedStream { inner: stream, open: self.open.clone() }, peer);
                }
                Err(err) => {
                    // Out of file descriptors and the like: say so and back off instead of
                    // spinning; the listener itself is still good.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A client connection that is counted while it exists.
pub struct CountedStream {
    inner: TcpStream,
    open: ConnectionGauge,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
