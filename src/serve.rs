//! Process wiring: the core runtime that owns shared I/O, the pingora server, background tasks.
//!
//! pingora runs each service on its own tokio runtime. The database pool, HTTP clients and background
//! tasks live on one long-lived "core" runtime created first, so they outlive and are shared by every
//! service runtime (an I/O resource stays bound to the runtime that created it).

use std::path::Path;
use std::sync::Arc;

use pingora_core::listeners::{ListenerConfig, TcpSocketOptions};
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;

use crate::clock::SystemClock;
use crate::config;
use crate::front::Front;
use crate::payment::Gateway;
use crate::proxy::Proxy;
use crate::store::{AttemptLog, Store};

/// Runs the gateway until a shutdown signal.
pub fn serve(config_path: &Path) -> Result<(), String> {
    let (settings, tenant) = config::load(config_path).map_err(|e| e.to_string())?;
    // The workers bind with SO_REUSEPORT, which would let a second gateway share the port silently
    // (and take half the traffic): refuse to start if something already listens there.
    std::net::TcpListener::bind(&settings.listen).map_err(|e| {
        format!(
            "listen {}: {e}; is another tollgate (or anything else) already listening there?",
            settings.listen
        )
    })?;
    let core = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tollgate-core")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;

    let listen = settings.listen.clone();
    let threads = settings.threads;
    let (gw, writer) = core.block_on(async {
        let store = Store::connect(&settings.database).await.map_err(|e| e.to_string())?;
        let (log, writer) = AttemptLog::start(store.clone());
        let gw = Gateway::new(settings, tenant, store, log, Arc::new(SystemClock))?;
        Ok::<_, String>((Arc::new(gw), writer))
    })?;
    describe(&gw);

    let reconciler = core.spawn(reconcile_forever(gw.clone()));

    // One single-threaded proxy service per thread, each with its own SO_REUSEPORT listener, the way
    // nginx runs workers. pingora's default (one listener, connections spread over the threads) hands
    // each accepted socket to another runtime than the one whose reactor owns it, so every request
    // paid a cross-thread wake-up: measured 48 vs 60-67 µs CPU per proxied request (README, Performance).
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    for _ in 0..threads {
        // The front answers unpaid 402s itself and hands everything else to the pingora proxy.
        let front = Front::new(
            pingora_proxy::http_proxy(&server.configuration, Proxy::new(gw.clone())),
            gw.clone(),
        );
        let mut proxy = Service::new("tollgate".to_string(), front);
        let mut sock = TcpSocketOptions::default();
        sock.so_reuseport = Some(true);
        // pingora reads through a 64 KiB buffer per connection: 64 MB at 1,000 idle keep-alive
        // connections. Request heads (payment headers are capped at 16 KiB) and bodies read through
        // a smaller buffer just as well; measured 65 MB at 1,000 keep-alive connections (README).
        let buffers = L4BufferSettings {
            read: Some(8 * 1024),
            write: None,
        };
        proxy.add_listener(
            ListenerConfig::tcp(listen.clone())
                .tcp_socket_options(sock)
                .l4_buffer(buffers),
        );
        proxy.threads = Some(1);
        server.add_service(proxy);
    }
    tracing::info!(%listen, workers = threads, "tollgate listening");
    server.run(RunArgs::default());

    // Shutting down: stop reconciling, write the last attempt records.
    reconciler.abort();
    drop(gw);
    core.block_on(async {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
    });
    Ok(())
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
