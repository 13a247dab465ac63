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

use crate::app::{App, Live};
use crate::clock::SystemClock;
use crate::config;
use crate::directory::{Directory, Hosted};
use crate::front::Connections;
use crate::payment::Payments;
use crate::store::{AttemptLog, Store};

/// Runs the gateway until a shutdown signal.
pub fn serve(config_path: &Path, upgrade: bool) -> Result<(), String> {
    let (settings, tenant) = config::load_any(config_path).map_err(|e| e.to_string())?;
    // A graceful upgrade takes the running gateway's sockets ([`crate::upgrade`]).
    let mut inherited = if upgrade {
        crate::upgrade::Inherited::receive(&settings.upgrade_sock)?
    } else {
        crate::upgrade::Inherited::default()
    };
    let listen: std::net::SocketAddr = settings
        .listen
        .parse()
        .map_err(|_| format!("listen: '{}' is not an address", settings.listen))?;
    // The workers bind with SO_REUSEPORT, which would let a second gateway share the port silently
    // (and take half the traffic): refuse to start if something already listens there.
    // (Sockets handed over for another address are not this configuration's: closed.)
    let proxy_sockets: Vec<_> = inherited
        .take_proxy()
        .into_iter()
        .filter(|l| l.local_addr().ok() == Some(listen))
        .collect();
    if proxy_sockets.is_empty() {
        std::net::TcpListener::bind(listen).map_err(|e| {
            format!("listen {listen}: {e}; is another tollgate (or anything else) already listening there? (to replace it without refusing a connection: `tollgate serve --upgrade`, then SIGQUIT to the running one)")
        })?;
    }
    let mut listening = crate::upgrade::Listening::default();
    let on =
        |l: &std::net::TcpListener, want: Option<std::net::SocketAddr>| want.is_some() && l.local_addr().ok() == want;
    let api_socket = inherited.take("api").filter(|l| on(l, settings.api_listen));
    let metrics_socket = inherited.take("metrics").filter(|l| on(l, settings.metrics_listen));
    let core = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tollgate-core")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;

    // Signals are caught from here on: a SIGHUP or SIGQUIT sent as soon as the port answers must
    // not find the default action (which ends the process).
    let signals = core.block_on(async { Signals::new() })?;
    let threads = settings.threads;
    let (live, writer, api_fd) = core.block_on(async {
        let store = Store::connect(&settings.database).await.map_err(|e| e.to_string())?;
        let (log, writer) = AttemptLog::start(store.clone());
        let payments = Payments::new(&settings, store.clone(), log, Arc::new(SystemClock))?;
        let directory = match tenant {
            Some(t) => Directory::One(Arc::new(t)),
            None => Directory::Hosted(Hosted::new(store, Arc::new(settings.clone()))),
        };
        let app = Arc::new(App {
            tls: App::tls_of(&settings)?,
            settings,
            payments: Arc::new(payments),
            directory,
        });
        let live = Live::new(app.clone());
        let mut api_fd = None;
        if let Some(addr) = app.settings.api_listen {
            api_fd = Some(crate::api::serve(addr, crate::api::Api::new(live.clone()), api_socket).await?);
        }
        Ok::<_, String>((live, writer, api_fd))
    })?;
    let app = live.app();
    describe(&app);
    let pid_file = app.settings.pid_file.clone();
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id())).map_err(|e| format!("pid_file {}: {e}", p.display()))?;
    }
    let reconciler = core.spawn(reconcile_forever(live.clone()));
    if let Some(url) = &app.settings.redis_url {
        let _enter = core.enter();
        crate::ratelimit::connect(url, &app.settings.redis_prefix)?;
    }
    // Rate-limit buckets of clients gone quiet are dropped once a minute (memory stays bounded).
    let forgetting = live.clone();
    core.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let app = forgetting.load();
            let s = &app.settings;
            s.rate_limits
                .iter()
                .chain(s.plans.all().filter_map(|p| p.limits.as_ref()))
                .for_each(|l| l.forget_idle());
        }
    });
    // Signers' funds, reported once at start (in the background: a first run works offline).
    let checking = app.clone();
    core.spawn(async move {
        for c in checking.payments.chains() {
            match c.check_signer_funds().await {
                Some(Ok(())) => tracing::info!(network = %c.network().name, signer = c.signer().unwrap_or_default(), "signer funded"),
                Some(Err(why)) => tracing::warn!(network = %c.network().name, "{why}"),
                None => {}
            }
        }
    });
    crate::metrics::METRICS.set_enabled(app.settings.metrics_listen.is_some());
    if let Some(addr) = app.settings.metrics_listen {
        match core.block_on(crate::health::serve(addr, live.clone(), metrics_socket)) {
            Ok(fd) => listening.0.push(("metrics".into(), fd)),
            Err(e) => tracing::warn!("{e}; metrics and health are not served (set [metrics] listen to a free address)"),
        }
    }

    // Descriptors: client connections are capped, and so is each worker's pool of idle upstream
    // connections, so that together they stay below the open-file limit with room for the database,
    // the chain RPCs and the facilitator. (A flood of requests whose clients went away used to fill
    // pingora's default pools, 128 idle upstream connections per worker, up to the limit.)
    let nofile = raise_open_file_limit();
    let limits = app.settings.limits.clone();
    let budget = Budget::of(nofile, threads, limits.max_connections);
    if nofile > 0 && budget.needs() > nofile {
        tracing::warn!(max_connections = budget.max_open, nofile, "limits.max_connections needs about {} descriptors (a client connection may hold an upstream one), more than the open-file limit; raise `ulimit -n` or lower it", budget.needs());
    }
    let max_open = budget.max_open;
    let conns = Connections::new(limits.clone(), max_open);

    let (shutdown, watch) = tokio::sync::watch::channel(false);
    let worker_fds = crate::workers::start(
        threads,
        listen,
        budget.upstream_pool,
        live.clone(),
        conns.clone(),
        watch,
        proxy_sockets,
    )?;
    drop(inherited);
    listening.0.extend(
        worker_fds
            .into_iter()
            .enumerate()
            .map(|(i, fd)| (format!("proxy#{i}"), fd)),
    );
    listening.0.extend(api_fd.map(|fd| ("api".to_string(), fd)));
    let upgrade_sock = app.settings.upgrade_sock.clone();
    tracing::info!(%listen, workers = threads, max_connections = max_open, "tollgate listening");

    core.block_on(async {
        let graceful = wait_for_signal(
            signals,
            || tokio::task::block_in_place(|| reload(&live, config_path)),
            || {
                tokio::task::block_in_place(|| match crate::upgrade::send(&listening, &upgrade_sock) {
                    Ok(()) => {
                        tracing::info!("SIGQUIT: listening sockets handed to the new process; draining");
                        true
                    }
                    Err(e) => {
                        tracing::error!("{e}; still serving");
                        false
                    }
                })
            },
        )
        .await;
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
        let app = live.app();
        let released = app.payments.release_unsent().await;
        // Requests answered before their settlement: their transfers are on their way.
        let left = app.payments.settling_done(Duration::from_secs(limits.shutdown_grace_secs.max(5))).await;
        if left > 0 {
            tracing::warn!(left, "settlements of answered requests still running at exit; reconciliation sends them after the restart");
        }
        if released > 0 {
            tracing::info!(released, "claims whose settlement never started given back (nothing was charged)");
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), app.payments.flush_records()).await;
        app.payments.store.close().await;
    });
    drop(writer);
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("tollgate stopped");
    Ok(())
}

/// How the open-file limit is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Budget {
    /// Client connections at once.
    max_open: usize,
    /// Idle upstream connections each worker keeps.
    upstream_pool: usize,
    /// Kept for everything else (database, RPCs, facilitator, the process itself).
    reserve: usize,
    threads: usize,
}

impl Budget {
    fn of(nofile: u64, threads: usize, configured: Option<usize>) -> Budget {
        let nofile = nofile as usize;
        let reserve = (nofile / 4).clamp(16, 128);
        let upstream_pool = (nofile / 16).clamp(4, 128);
        let max_open =
            configured.unwrap_or_else(|| (nofile.saturating_sub(reserve + upstream_pool * threads) / 2).max(8));
        Budget {
            max_open,
            upstream_pool,
            reserve,
            threads,
        }
    }

    /// Descriptors this budget can use.
    fn needs(&self) -> u64 {
        (self.max_open * 2 + self.upstream_pool * self.threads + self.reserve) as u64
    }
}

/// The signals the gateway acts on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching them (inside the core runtime).
    fn new() -> Result<Signals, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let catch = |k: SignalKind| signal(k).map_err(|e| format!("cannot listen for signals: {e}"));
        Ok(Signals {
            term: catch(SignalKind::terminate())?,
            int: catch(SignalKind::interrupt())?,
            hup: catch(SignalKind::hangup())?,
            quit: catch(SignalKind::quit())?,
        })
    }
}

/// Waits for SIGTERM (`true`: drain first) or SIGINT (`false`); runs `on_hup` at each SIGHUP, and
/// `on_quit` at each SIGQUIT (a graceful upgrade: drain once it has handed the sockets over).
async fn wait_for_signal(s: Signals, on_hup: impl Fn(), on_quit: impl Fn() -> bool) -> bool {
    let Signals {
        mut term,
        mut int,
        mut hup,
        mut quit,
    } = s;
    loop {
        tokio::select! {
            _ = term.recv() => return true,
            _ = int.recv() => return false,
            _ = hup.recv() => on_hup(),
            _ = quit.recv() => if on_quit() { return true },
        }
    }
}

/// SIGHUP: re-reads the config file and puts it in force, or keeps the running one if it is
/// invalid ([`crate::reload`]).
fn reload(live: &Live, path: &Path) {
    let current = live.app();
    match crate::reload::next(&current, path) {
        Ok(r) => {
            if !r.at_restart.is_empty() {
                tracing::warn!(keys = ?r.at_restart, "reload: these changed in the file and take effect at the next start; they keep their running values");
            }
            let describe_it = r.app.clone();
            let generation = live.store(r.app);
            describe(&describe_it);
            tracing::info!(generation, file = %path.display(), "reload: configuration in force");
        }
        Err(e) => tracing::error!("reload refused, the running configuration stays: {e}"),
    }
}

fn describe(app: &App) {
    let Some(t) = app.directory.single() else {
        tracing::info!(
            plans = ?app.settings.plans.names(),
            networks = ?app.settings.networks.iter().map(|n| n.network.name.as_str()).collect::<Vec<_>>(),
            api = ?app.settings.api_listen,
            "tollgate configured: hosted mode, tenants from the database"
        );
        return;
    };
    let priced = t.routes.iter().filter(|r| r.pricing.is_some()).count();
    let evm = app
        .settings
        .networks
        .iter()
        .any(|n| n.network.family == crate::x402::Family::Evm);
    tracing::info!(
        upstream = %t.upstream.addr,
        pay_to = %if evm { t.pay_to.to_string() } else { "-".into() },
        pay_to_solana = t.pay_to_solana.as_deref().unwrap_or("-"),
        routes = t.routes.len(),
        priced,
        networks = ?app.settings.networks.iter().map(|n| n.network.name.as_str()).collect::<Vec<_>>(),
        "tollgate configured"
    );
    if evm && t.pay_to.is_zero() {
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

async fn reconcile_forever(live: Arc<Live>) {
    let mut tick = tokio::time::interval(live.app().settings.reconcile_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let app = live.app();
        match app.payments.reconcile_once(app.settings.reconcile_after).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(resolved = n, "reconciliation pass"),
            Err(e) => tracing::warn!(error = %e, "reconciliation pass failed; will retry"),
        }
        // Each chain's RPC latency, and (hosted) the tenants' use of their allowances.
        if crate::metrics::METRICS.enabled() {
            let m = &crate::metrics::METRICS;
            for c in app.payments.chains() {
                let started = std::time::Instant::now();
                if tokio::time::timeout(Duration::from_secs(5), c.ping())
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    m.rpc_seconds
                        .with_label_values(&[&c.network().name])
                        .observe(started.elapsed().as_secs_f64());
                    if let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(5), c.pending_sends()).await {
                        m.relayer_pending
                            .with_label_values(&[&c.network().name])
                            .set(n.min(i64::MAX as u64) as i64);
                    }
                }
            }
            if app.settings.hosted.is_some() {
                let now = app.payments.clock.now_secs() as i64;
                let (period, _) = crate::clock::month_bounds(now);
                if let Ok(top) = app
                    .payments
                    .store
                    .top_usage(period, crate::metrics::TENANT_LABELS as i64)
                    .await
                {
                    m.quota_used.reset();
                    m.quota_limit.reset();
                    for (id, plan, used) in top {
                        m.quota_used.with_label_values(&[&id]).set(used);
                        let limit = app.settings.plans.get(&plan).map_or(-1, |p| p.verifications);
                        m.quota_limit.with_label_values(&[&id]).set(limit);
                    }
                }
            }
        }
        // The ledger's rows by state, for `tollgate_ledger_rows`.
        if crate::metrics::METRICS.enabled() {
            use crate::store::PaymentState;
            for s in [
                PaymentState::Claimed,
                PaymentState::Pending,
                PaymentState::Settled,
                PaymentState::Failed,
                PaymentState::Lost,
            ] {
                if let Ok(n) = app.payments.store.count_payments(s).await {
                    crate::metrics::METRICS
                        .ledger_rows
                        .with_label_values(&[s.as_str()])
                        .set(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn descriptors_are_shared_out_below_the_limit() {
        for (nofile, threads) in [(160u64, 2), (1024, 2), (1024, 4), (20_000, 16), (1_048_576, 64)] {
            let b = Budget::of(nofile, threads, None);
            assert!(b.needs() <= nofile, "{nofile} {threads}: {b:?}");
            assert!(b.max_open >= 8 && b.upstream_pool >= 4, "{b:?}");
        }
        assert_eq!(Budget::of(20_000, 2, None).max_open, (20_000 - 128 - 256) / 2);
        assert_eq!(Budget::of(20_000, 2, Some(100)).max_open, 100);
    }
}
