//! Graceful upgrade: a new binary takes over the listening sockets of the running one, so that no
//! connection is refused or reset while binaries change (pingora's upgrade, through its own
//! descriptor transfer, [`pingora_core::server::Fds`]).
//!
//! 1. Start the new binary with `tollgate serve --upgrade`: it waits (up to 5 s) on
//!    `upgrade_sock` for the sockets instead of binding.
//! 2. Send the running gateway SIGQUIT: it hands over every listening socket (each proxy worker's,
//!    the management API's, the metrics listener's) over that Unix socket, then stops accepting and
//!    drains as on SIGTERM.
//!
//! The sockets never close in between, so connections waiting in their accept queues are taken by
//! the new process. Proxy sockets are keyed `proxy#N`; a new process with more workers binds the
//! rest itself (`SO_REUSEPORT`), one with fewer closes the extra ones (an unclaimed `SO_REUSEPORT`
//! socket would swallow its share of connections).

use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::path::Path;

use pingora_core::server::Fds;

/// The sockets the running process listens on, by name.
#[derive(Debug, Default, Clone)]
pub struct Listening(pub Vec<(String, RawFd)>);

/// Sockets received from the previous process.
#[derive(Default)]
pub struct Inherited {
    sockets: Vec<(String, TcpListener)>,
}

impl Inherited {
    /// Waits for the running gateway to hand its sockets over on `path` (it does on SIGQUIT).
    pub fn receive(path: &Path) -> Result<Inherited, String> {
        let p = path
            .to_str()
            .ok_or_else(|| format!("upgrade_sock {}: not a UTF-8 path", path.display()))?;
        let mut fds = Fds::new();
        fds.get_from_sock(p).map_err(|e| {
            format!(
                "upgrade: no sockets arrived on {p} ({e}); send the running gateway SIGQUIT within 5 s of starting this one"
            )
        })?;
        let (names, raw) = fds.serialize();
        let sockets = names
            .into_iter()
            .zip(raw)
            // SAFETY: each descriptor was just received over SCM_RIGHTS: this process owns it and
            // nothing else here refers to it.
            .map(|(n, fd)| (n, unsafe { TcpListener::from_raw_fd(fd) }))
            .collect::<Vec<_>>();
        tracing::info!(sockets = ?sockets.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), "upgrade: took over the running gateway's listening sockets");
        Ok(Inherited { sockets })
    }

    /// The socket named `name`, if it was handed over, non-blocking.
    pub fn take(&mut self, name: &str) -> Option<TcpListener> {
        let i = self.sockets.iter().position(|(n, _)| n == name)?;
        let (_, l) = self.sockets.swap_remove(i);
        l.set_nonblocking(true).ok()?;
        Some(l)
    }

    /// The proxy sockets (`proxy#N`), in order.
    pub fn take_proxy(&mut self) -> Vec<TcpListener> {
        let mut names: Vec<String> = self
            .sockets
            .iter()
            .filter(|(n, _)| n.starts_with("proxy#"))
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names.iter().filter_map(|n| self.take(n)).collect()
    }
}

impl Drop for Inherited {
    fn drop(&mut self) {
        if !self.sockets.is_empty() {
            tracing::info!(unclaimed = ?self.sockets.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), "upgrade: closing sockets this configuration does not use");
        }
    }
}

/// Serves `router` on `addr`, or on `inherited` (its socket handed over in an upgrade), in the
/// background; returns the listening descriptor (to hand over in turn). `what` names the listener
/// in messages and `key` its config key.
pub async fn serve_router(
    what: &'static str,
    key: &str,
    addr: std::net::SocketAddr,
    router: axum::Router,
    inherited: Option<TcpListener>,
) -> Result<RawFd, String> {
    let listener = match inherited {
        Some(l) => tokio::net::TcpListener::from_std(l),
        None => tokio::net::TcpListener::bind(addr).await,
    }
    .map_err(|e| format!("{key} {addr}: {e}"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    tracing::info!(%addr, "{what} listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "{what} stopped");
        }
    });
    Ok(fd)
}

/// Hands `listening` over to the process waiting on `path`.
pub fn send(listening: &Listening, path: &Path) -> Result<(), String> {
    let p = path
        .to_str()
        .ok_or_else(|| format!("upgrade_sock {}: not a UTF-8 path", path.display()))?;
    let mut fds = Fds::new();
    for (name, fd) in &listening.0 {
        fds.add(name.clone(), *fd);
    }
    fds.send_to_sock(p).map(|_| ()).map_err(|e| {
        format!("upgrade: cannot hand the sockets to {p} ({e}); is `tollgate serve --upgrade` waiting there?")
    })
}
