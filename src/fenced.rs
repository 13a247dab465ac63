//! A client connection lent to pingora for exactly one request.
//!
//! The front ([`crate::front`]) reads each request head itself. When it hands a request to pingora,
//! pingora must see that request and nothing after it: pingora treats bytes past the request it is
//! serving (a pipelined next request, arriving while the first is proxied or sitting behind a long
//! body) as an error and drops the connection with both answers. [`Fenced`] gives pingora the bytes
//! the front already holds, then reads the socket for it, but never past the request's end when its
//! length is known (a `Content-Length`, or none). At that fence it keeps reading for itself, so the
//! next request waits for the front, and a client that closes is still seen as gone. When the length
//! is not known from the head (chunked bodies, upgrades), there is no fence and pingora's own framing
//! decides; a pipelined request behind such a body is then pingora's to drop, with the connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::conn::Conn;
use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest};
use pingora_core::protocols::{Peek, Shutdown, Ssl, UniqueID, UniqueIDType};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection with a fence after the request pingora may read.
#[derive(Debug)]
pub struct Fenced {
    inner: Conn,
    /// Bytes read from the socket and not given to pingora: the rest of this request, then whatever
    /// the client sent after it.
    held: BytesMut,
    /// How many more bytes pingora may read; `None`: no fence.
    left: Option<usize>,
    /// Most bytes kept past the fence (more waits in the socket).
    cap: usize,
    /// The client closed its side after the fence.
    eof: bool,
}

impl Fenced {
    /// Lends `inner` with the bytes already read (`held`), fenced after `len` bytes when known.
    pub fn new(inner: Conn, held: BytesMut, len: Option<usize>, cap: usize) -> Fenced {
        Fenced {
            inner,
            held,
            left: len,
            cap,
            eof: false,
        }
    }

    /// The connection back, with the bytes read past the request (the next request's start).
    pub fn into_parts(self) -> (Conn, BytesMut) {
        (self.inner, self.held)
    }

    fn read_fenced(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.left == Some(0) {
            return self.watch(cx);
        }
        let want = self.left.map_or(out.remaining(), |l| l.min(out.remaining()));
        let n = if !self.held.is_empty() {
            let n = want.min(self.held.len());
            out.put_slice(&self.held[..n]);
            self.held.advance(n);
            n
        } else {
            // Straight from the socket into pingora's buffer, no further than the fence.
            let mut limited = out.take(want);
            std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut limited))?;
            let n = limited.filled().len();
            // SAFETY: `limited` filled (so initialised) these `n` bytes of `out`'s unfilled part.
            unsafe { out.assume_init(n) };
            out.advance(n);
            n
        };
        if let Some(l) = &mut self.left {
            *l -= n;
        }
        Poll::Ready(Ok(()))
    }

    /// At the fence: pingora waits (it only reads here to notice a client that goes away); what
    /// arrives is kept for the front.
    fn watch(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.eof {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.held.len() >= self.cap {
                // Enough held: stop reading until pingora is done (its request ends by other events).
                return Poll::Pending;
            }
            self.held.reserve(4096);
            let room = self.cap - self.held.len() + 1;
            let spare = self.held.spare_capacity_mut();
            let take = spare.len().min(room);
            let mut rb = ReadBuf::uninit(&mut spare[..take]);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.eof = true;
                        return Poll::Ready(Ok(()));
                    }
                    // SAFETY: the read initialised `n` bytes of the spare capacity.
                    unsafe { self.held.set_len(self.held.len() + n) };
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncRead for Fenced {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().read_fenced(cx, out)
    }
}

impl AsyncWrite for Fenced {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Fenced {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut self.inner).await
    }
}

impl UniqueID for Fenced {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Fenced {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<pingora_core::protocols::tls::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

#[async_trait]
impl Peek for Fenced {}

impl GetTimingDigest for Fenced {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Fenced {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Fenced {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}
