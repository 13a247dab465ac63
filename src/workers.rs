//! The workers: one thread per core, each with its own single-threaded runtime and its own
//! `SO_REUSEPORT` listening socket, so that the kernel spreads connections and each connection lives
//! on the runtime whose reactor owns it (the nginx model; README, Performance, has what that saved).
//!
//! pingora's `Server` is not used for this: it keeps one socket per address in a table shared by all
//! services, so two services on one address share one descriptor, and both close it at shutdown
//! (a double close, which may close some other connection's descriptor that took the number). Here
//! each worker owns its socket, stops accepting when told to shut down, and keeps its runtime
//! running for the requests still in flight; [`crate::serve`] decides when the process ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_core::server::configuration::ServerConf;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::app::Live;
use crate::conn::Conn;
use crate::front::{Connections, Front, TOO_MANY_CONNECTIONS};
use crate::proxy::Proxy;

/// Starts `threads` workers listening on `addr` (on the sockets in `inherited` first, handed over
/// by the previous process in an upgrade), each keeping at most `upstream_pool` idle upstream
/// connections; returns each worker's listening descriptor once every one is listening. When
/// `shutdown` turns `true` they stop accepting (and the front closes idle connections).
pub fn start(
    threads: usize,
    addr: SocketAddr,
    upstream_pool: usize,
    live: Arc<Live>,
    conns: Arc<Connections>,
    shutdown: watch::Receiver<bool>,
    inherited: Vec<std::net::TcpListener>,
) -> Result<Vec<std::os::fd::RawFd>, String> {
    let conf = Arc::new(ServerConf {
        threads: 1,
        work_stealing: false,
        // Idle upstream connections each worker keeps ([`crate::serve`] sizes it from the open-file limit).
        upstream_keepalive_pool_size: upstream_pool,
        ..Default::default()
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<std::os::fd::RawFd, String>>();
    // More sockets than workers: the extra ones are closed here (left open, each would take its
    // share of connections with nobody accepting them).
    let mut inherited = inherited.into_iter();
    for i in 0..threads {
        let adopted = inherited.next();
        let (live, conns, conf, shutdown, ready) = (
            live.clone(),
            conns.clone(),
            conf.clone(),
            shutdown.clone(),
            ready_tx.clone(),
        );
        std::thread::Builder::new()
            .name(format!("tollgate-w{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(format!("cannot start worker {i}: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match adopted.map(TcpListener::from_std).unwrap_or_else(|| bind(addr)) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready.send(Err(format!("listen {addr}: {e}")));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(std::os::fd::AsRawFd::as_raw_fd(&listener)));
                    let live_tls = live.clone();
                    let front = Arc::new(Front::new(
                        pingora_proxy::http_proxy(&conf, Proxy::new(live.clone())),
                        live,
                        conns.clone(),
                    ));
                    accept_until_shutdown(listener, front, live_tls, conns, shutdown).await;
                    // Listening socket closed; the connections still open finish on this runtime.
                    std::future::pending::<()>().await;
                });
            })
            .map_err(|e| format!("cannot start worker {i}: {e}"))?;
    }
    drop(ready_tx);
    drop(inherited);
    let mut fds = Vec::with_capacity(threads);
    for _ in 0..threads {
        fds.push(
            ready_rx
                .recv()
                .map_err(|_| "a worker stopped before listening".to_string())??,
        );
    }
    Ok(fds)
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

async fn accept_until_shutdown(
    listener: TcpListener,
    front: Arc<Front>,
    live: Arc<Live>,
    conns: Arc<Connections>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // The cap is taken here, before anything else holds the descriptor: a burst of
                // connections over it is answered and closed at once, never queued in tasks.
                let Some(slot) = conns.enter() else {
                    let _ = tcp.try_write(TOO_MANY_CONNECTIONS);
                    drop(tcp);
                    tracing::debug!("connection refused: limits.max_connections reached");
                    continue;
                };
                let mut stream: L4Stream = tcp.into();
                let digest = SocketDigest::from_raw_fd(std::os::fd::AsRawFd::as_raw_fd(&stream));
                let _ = digest.peer_addr.set(Some(peer.into()));
                stream.set_socket_digest(digest);
                let _ = stream.set_nodelay();
                let (front, shutdown) = (front.clone(), shutdown.clone());
                let tls = live.load().tls.clone();
                let handshake_time = Duration::from_secs(conns.limits().head_timeout_secs);
                tokio::spawn(async move {
                    let conn = match tls {
                        None => Conn::Plain(stream),
                        // The handshake has the head's deadline (a slow-loris handshake ends too).
                        Some(acceptor) => {
                            match tokio::time::timeout(handshake_time, acceptor.tls_handshake(stream)).await {
                                Ok(Ok(s)) => Conn::Tls(Box::new(s)),
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!("TLS handshake timed out");
                                    return;
                                }
                            }
                        }
                    };
                    front.serve(conn, Some(peer.ip()), slot, &shutdown).await
                });
            }
            Err(e) => {
                // Out of descriptors (the connection cap is set below the limit, but the upstream,
                // chain and database connections count too): wait for some to close instead of
                // spinning, and say so once in a while rather than per attempt.
                let exhausted = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
                );
                if last_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "accept failed{}", if exhausted { "; out of file descriptors: raise `ulimit -n` or lower limits.max_connections" } else { "" });
                    last_warned = Some(Instant::now());
                }
                if exhausted {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    tracing::debug!("worker stopped accepting");
}
