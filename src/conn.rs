//! A client connection: plain TCP, or TLS over it (`[tls]`). The front and pingora see one type
//! either way; the TLS handshake happens before the front reads anything.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef, ALPN};
use pingora_core::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest};
use pingora_core::protocols::{Peek, Shutdown, Ssl, UniqueID, UniqueIDType};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type TlsStream = pingora_core::protocols::tls::TlsStream<L4Stream>;

/// One client connection.
#[derive(Debug)]
pub enum Conn {
    Plain(L4Stream),
    Tls(Box<TlsStream>),
}

impl Conn {
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }
}

/// Builds the TLS acceptor from a certificate chain and a private key (PEM files): HTTP/1.1 by
/// ALPN, TLS 1.2 and 1.3. Read again at each reload, so that renewed files are picked up.
pub fn acceptor(cert: &Path, key: &Path) -> Result<Arc<Acceptor>, String> {
    use pingora_rustls::{version, ServerConfig};
    pingora_rustls::install_default_crypto_provider();
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let (certs, key) = pingora_rustls::load_certs_and_key_files(&c, &k)
        .map_err(|e| format!("tls: cannot read {c} or {k}: {e}"))?
        .ok_or_else(|| {
            format!("tls: no certificate in {c} or no private key in {k}; give PEM files (the chain, then the key)")
        })?;
    let mut config = ServerConfig::builder_with_protocol_versions(&[&version::TLS12, &version::TLS13])
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: {c} and {k} do not make a certificate and its key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(Acceptor::from_server_config(Arc::new(config))))
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Conn::Plain($s) => $e,
            Conn::Tls($s) => $e,
        }
    };
}

macro_rules! pinned {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Conn::Plain(x) => {
                let $s = Pin::new(x);
                $e
            }
            Conn::Tls(x) => {
                let $s = Pin::new(&mut **x);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        pinned!(self.get_mut(), s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        pinned!(self.get_mut(), s => s.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        pinned!(self.get_mut(), s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        pinned!(self.get_mut(), s => s.poll_shutdown(cx))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        pinned!(self.get_mut(), s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        each!(self, s => s.is_write_vectored())
    }
}

#[async_trait]
impl Shutdown for Conn {
    async fn shutdown(&mut self) {
        match self {
            Conn::Plain(s) => Shutdown::shutdown(s).await,
            Conn::Tls(s) => Shutdown::shutdown(s.as_mut()).await,
        }
    }
}

impl UniqueID for Conn {
    fn id(&self) -> UniqueIDType {
        each!(self, s => s.id())
    }
}

impl Ssl for Conn {
    fn get_ssl(&self) -> Option<&TlsRef> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(s) => s.get_ssl(),
        }
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(s) => s.get_ssl_digest(),
        }
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(s) => s.selected_alpn_proto(),
        }
    }
}

#[async_trait]
impl Peek for Conn {}

impl GetTimingDigest for Conn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        each!(self, s => s.get_timing_digest())
    }
    fn get_read_pending_time(&self) -> Duration {
        each!(self, s => s.get_read_pending_time())
    }
    fn get_write_pending_time(&self) -> Duration {
        each!(self, s => s.get_write_pending_time())
    }
}

impl GetProxyDigest for Conn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        each!(self, s => s.get_proxy_digest())
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        each!(self, s => s.set_proxy_digest(digest))
    }
}

impl GetSocketDigest for Conn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        each!(self, s => s.get_socket_digest())
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        each!(self, s => s.set_socket_digest(digest))
    }
}
