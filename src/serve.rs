//! Process wiring: the core runtime that owns shared I/O, the workers, background tasks, signals.
//!
//! Each worker ([`crate::workers`]) runs its own single-threaded runtime. The database pool, HTTP
//! clients and background tasks live on one long-lived "core" runtime created first, so they outlive
//! and are shared by every worker (an I/O resource stays bound to the runtime that created it).
//!
//! Signals: SIGTERM stops accepting at once, closes idle connections, lets the requests in flight
//! finish (at most `limits.shutdown_grace_secs`; a paid request whose payment settled is served),
//! writes the last records and exits. SIGINT does the same without waiting for requests.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::SystemClock;
use crate::config;
use crate::front::Connections;
use crate::payment::Gateway;
use crate::store::{AttemptLog, Store};

/// Runs the gateway until a shutdown signal.
pub fn serve(config_path: &Path) -> Result<(), String> {
    let (settings, tenant) = config::load(config_path).map_err(|e| e.to_string())?;
    let listen: std::net::SocketAddr = settings
        .listen
        .parse()
        .map_err(|_| format!("listen: '{}' is not an address", settings.listen))?;
    // The workers bind with SO_REUSEPORT, which would let a second gateway share the port silently
    // (and take half the traffic): refuse to start if something already listens there.
    std::net::TcpListener::bind(listen).map_err(|e| {
        format!("listen {listen}: {e}; is another tollgate (or anything else) already listening there?")
    })?;
    let core = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tollgate-core")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;

    let threads = settings.threads;
    let (gw, writer) = core.block_on(async {
        let store = Store::connect(&settings.database).await.map_err(|e| e.to_string())?;
        let (log, writer) = AttemptLog::start(store.clone());
        let gw = Gateway::new(settings, tenant, store, log, Arc::new(SystemClock))?;
        Ok::<_, String>((Arc::new(gw), writer))
    })?;
    describe(&gw);
    let reconciler = core.spawn(reconcile_forever(gw.clone()));

    // Client connections: capped below the open-file limit, so that the gateway answers 503 instead
    // of failing to accept (or to reach its upstream, chain and database) at the limit.
    let nofile = raise_open_file_limit();
    let limits = gw.settings.limits.clone();
    let max_open = limits
        .max_connections
        .unwrap_or_else(|| (nofile.saturating_sub(256) / 2).max(64) as usize);
    if nofile > 0 && max_open as u64 * 2 + 64 > nofile {
        tracing::warn!(max_open, nofile, "limits.max_connections is close to the open-file limit (each client connection may hold an upstream one too); raise `ulimit -n` or lower it");
    }
    let conns = Connections::new(limits.clone(), max_open);

    let (shutdown, watch) = tokio::sync::watch::channel(false);
    crate::workers::start(threads, listen, gw.clone(), conns.clone(), watch)?;
    tracing::info!(%listen, workers = threads, max_connections = max_open, "tollgate listening");

    core.block_on(async {
        let graceful = wait_for_signal().await;
        let _ = shutdown.send(true);
        if graceful {
            tracing::info!(in_flight = conns.busy(), open = conns.open(), grace_secs = limits.shutdown_grace_secs, "SIGTERM: no new connections; finishing the requests in flight");
            let drained = tokio::time::timeout(Duration::from_secs(limits.shutdown_grace_secs), async {
                while conns.busy() > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            if drained.is_err() {
                tracing::warn!(in_flight = conns.busy(), "grace period over; cutting off the requests still in flight (their payments are in the ledger and reconciled)");
            }
        } else {
            tracing::info!("SIGINT: exiting without waiting for requests in flight");
        }
        reconciler.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), gw.flush_records()).await;
        gw.store.close().await;
    });
    drop(writer);
    tracing::info!("tollgate stopped");
    Ok(())
}

/// Waits for SIGTERM (`true`: drain first) or SIGINT (`false`).
async fn wait_for_signal() -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot listen for signals; only SIGKILL will stop this process");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => true,
        _ = int.recv() => false,
    }
}

fn describe(gw: &Gateway) {
    let t = &gw.tenant;
    let priced = t.routes.iter().filter(|r| r.pricing.is_some()).count();
    tracing::info!(
        upstream = %t.upstream.addr,
        pay_to = %t.pay_to,
        routes = t.routes.len(),
        priced,
        networks = ?gw.settings.networks.iter().map(|n| n.network.name.as_str()).collect::<Vec<_>>(),
        "tollgate configured"
    );
    if t.pay_to.is_zero() {
        tracing::warn!("pay_to is the zero address: USDC refuses transfers to it, so every payment will fail; set pay_to to your own address");
    }
}

/// Raises the soft open-file limit to the hard one; returns it (0 if unknown).
fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

async fn reconcile_forever(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(gw.settings.reconcile_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match gw.reconcile_once(gw.settings.reconcile_after).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(resolved = n, "reconciliation pass"),
            Err(e) => tracing::warn!(error = %e, "reconciliation pass failed; will retry"),
        }
    }
}
