//! The `tollgate` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// glibc malloc was ~10% of proxy CPU under load (perf). jemalloc and mimalloc both won back ~15% of
// throughput; jemalloc kept resident memory lower (65 vs 77 MB at 1,000 keep-alive connections).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A reverse-proxy paywall for the x402 payment protocol"
)]
struct Cli {
    /// Log lines as `text` or `json` (one JSON object per line, for log pipelines).
    #[arg(long, global = true, env = "TOLLGATE_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The TOML config.
        #[arg(long, short, default_value = "config/tollgate.toml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        /// Graceful upgrade: take over the listening sockets of the running gateway (send it
        /// SIGQUIT within 5 s) instead of binding them.
        #[arg(long, short)]
        upgrade: bool,
    },
    /// Re-read the config of a running gateway without dropping a connection: validates the file
    /// first (an invalid one is refused here, and the gateway keeps its configuration), then sends
    /// the gateway SIGHUP and waits until its `/status` shows the new configuration.
    Reload {
        #[arg(long, short, default_value = "config/tollgate.toml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        /// The gateway's process id (default: read from the config's `pid_file`).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Validate a config without serving; every problem is named with its key and fix.
    CheckConfig {
        /// The TOML config.
        #[arg(default_value = "config/tollgate.toml")]
        file: PathBuf,
    },
    /// Create or upgrade the database schema (serve does this too, at start).
    Migrate {
        #[arg(long, short, default_value = "config/tollgate.toml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
    /// Hosted mode: manage tenants on the configured database.
    Tenant {
        #[arg(
            long,
            short,
            global = true,
            default_value = "config/hosted.toml",
            env = "TOLLGATE_CONFIG"
        )]
        config: PathBuf,
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Hosted mode: manage a tenant's API keys on the configured database.
    Key {
        #[arg(
            long,
            short,
            global = true,
            default_value = "config/hosted.toml",
            env = "TOLLGATE_CONFIG"
        )]
        config: PathBuf,
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Subcommand)]
enum TenantAction {
    /// Create a tenant and print its first API key (shown this once).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "free")]
        tier: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        slug: Option<String>,
        /// An `x402_test_` key instead of a live one.
        #[arg(long)]
        test: bool,
    },
    /// List tenants.
    List,
    /// Show one tenant.
    Show { id: String },
    /// Move a tenant to another plan.
    SetPlan { id: String, tier: String },
    /// Suspend a tenant: its priced routes take no payment, its keys are refused.
    Suspend { id: String },
    /// Reactivate a suspended tenant.
    Resume { id: String },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create a key for a tenant and print it (shown this once).
    Create {
        tenant: String,
        #[arg(long, default_value = "cli")]
        name: String,
        /// verify, settle, analytics, manage (repeat; none = all).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long)]
        test: bool,
    },
    /// List a tenant's keys (prefixes only).
    List { tenant: String },
    /// Revoke a key (on other running gateways within hosted.key_cache_secs).
    Revoke { tenant: String, key_id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn,sqlx=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
    let result = match cli.command {
        Command::Serve { config, upgrade } => tollgate::serve::serve(&config, upgrade),
        Command::CheckConfig { file } => check_config(&file),
        Command::Reload { config, pid } => reload(&config, pid),
        Command::Migrate { config } => migrate(&config),
        Command::Tenant { config, action } => tenant_cmd(&config, action),
        Command::Key { config, action } => key_cmd(&config, action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn reload(config: &std::path::Path, pid: Option<u32>) -> Result<(), String> {
    let (settings, _) = tollgate::config::load_any(config).map_err(|e| format!("{e}\nnothing was reloaded"))?;
    let pid = match (pid, &settings.pid_file) {
        (Some(p), _) => p,
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| format!("pid_file {}: {e}; is the gateway running?", f.display()))?
            .trim()
            .parse()
            .map_err(|_| format!("pid_file {}: not a process id", f.display()))?,
        (None, None) => {
            return Err(format!(
                "which gateway? give --pid, or set pid_file in {} (or send the process SIGHUP yourself)",
                config.display()
            ))
        }
    };
    // The gateway says which configuration it runs on its metrics listener, if it has one.
    let status = settings.metrics_listen.map(|a| format!("http://{a}/status"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let generation = |url: String| async move {
        let v: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
        v["config_generation"].as_u64()
    };
    let before = match &status {
        Some(url) => rt.block_on(generation(url.clone())),
        None => None,
    };
    // SAFETY: kill(2) with a plain signal number.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) } != 0 {
        return Err(format!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let (Some(url), Some(before)) = (status, before) else {
        println!("sent SIGHUP to {pid}; its log says whether the configuration took");
        return Ok(());
    };
    let after = rt.block_on(async {
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            match generation(url.clone()).await {
                Some(g) if g > before => return Some(g),
                _ => {}
            }
        }
        None
    });
    match after {
        Some(g) => {
            println!("{}: reloaded (configuration {g} in force)", config.display());
            Ok(())
        }
        None => Err(format!(
            "process {pid} kept its configuration ({before}); its log says why"
        )),
    }
}

fn check_config(file: &std::path::Path) -> Result<(), String> {
    let (settings, tenant) = tollgate::config::load_any(file).map_err(|e| e.to_string())?;
    println!("{}: ok", file.display());
    println!("  listen    {}", settings.listen);
    let Some(tenant) = tenant else {
        println!("  mode      hosted (tenants from the database)");
        println!("  database  {}", settings.database);
        if let Some(a) = settings.api_listen {
            println!("  api       {a}");
        }
        for n in &settings.networks {
            println!("  network   {} ({})", n.network.name, n.network.caip2);
        }
        for name in settings.plans.names() {
            let p = settings.plans.get(name).expect("listed");
            println!(
                "  plan      {name}: {} verifications/month, chains {}",
                p.verifications,
                p.enabled_names(&settings.networks).join(", ")
            );
        }
        return Ok(());
    };
    println!("  upstream  {}", tenant.upstream.addr);
    println!("  database  {}", settings.database);
    println!("  pay_to    {}", tenant.pay_to);
    if let Some(s) = &tenant.pay_to_solana {
        println!("  pay_to    {s} (Solana)");
    }
    for n in &settings.networks {
        println!(
            "  network   {} ({}) USDC {}",
            n.network.name, n.network.caip2, n.network.asset
        );
    }
    for r in &tenant.routes {
        match &r.pricing {
            None => println!("  route     {:<32} free", r.label()),
            Some(p) => {
                let price = p
                    .offers
                    .first()
                    .map(|o| tollgate::money::format_usd(o.amount, o.network.decimals))
                    .unwrap_or_default();
                let nets: Vec<&str> = p.offers.iter().map(|o| o.network.name.as_str()).collect();
                println!(
                    "  route     {:<32} {price} on {} (settle {})",
                    r.label(),
                    nets.join(", "),
                    p.settle.as_str()
                );
            }
        }
    }
    Ok(())
}

/// Runs `f` on the config's database (migrated), on a small runtime.
fn with_store<T>(
    config: &std::path::Path,
    f: impl AsyncFnOnce(&tollgate::store::Store, &tollgate::config::Settings) -> Result<T, String>,
) -> Result<T, String> {
    let (settings, _) = tollgate::config::load_any(config).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store = tollgate::store::Store::connect(&settings.database)
            .await
            .map_err(|e| e.to_string())?;
        let out = f(&store, &settings).await;
        store.close().await;
        out
    })
}

fn now_ms() -> i64 {
    use tollgate::clock::Clock;
    tollgate::clock::SystemClock.now_ms() as i64
}

fn print_tenant(t: &tollgate::store::TenantRow) {
    println!(
        "{}  {:<24} {:<10} {:<9} {} used this period {}  upstream {}",
        t.id,
        t.slug,
        t.plan,
        t.status,
        t.email,
        t.used,
        t.upstream.as_deref().unwrap_or("-")
    );
}

fn tenant_cmd(config: &std::path::Path, action: TenantAction) -> Result<(), String> {
    use tollgate::store::TenantChange;
    use tollgate::tenancy::ops;
    with_store(config, async |store, settings| {
        let plans = &settings.plans;
        let change = |c: TenantChange, id: String| async move {
            let t = ops::change_tenant(store, plans, &id, c, now_ms())
                .await
                .map_err(|e| e.to_string())?;
            print_tenant(&t);
            Ok(())
        };
        match action {
            TenantAction::Create {
                email,
                tier,
                name,
                slug,
                test,
            } => {
                let new = ops::NewTenant {
                    email,
                    tier,
                    name,
                    slug,
                    live: !test,
                };
                let (t, key) = ops::create_tenant(store, plans, new, now_ms())
                    .await
                    .map_err(|e| e.to_string())?;
                print_tenant(&t);
                println!("api key (shown once): {key}");
                Ok(())
            }
            TenantAction::List => {
                let mut after: Option<String> = None;
                loop {
                    let page = store.tenants(after.as_deref(), 500).await.map_err(|e| e.to_string())?;
                    for t in &page {
                        print_tenant(t);
                    }
                    match page.last() {
                        Some(t) if page.len() == 500 => after = Some(t.id.clone()),
                        _ => return Ok(()),
                    }
                }
            }
            TenantAction::Show { id } => {
                let t = store
                    .tenant(&id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no tenant {id}"))?;
                print_tenant(&t);
                println!("routes: {}", t.routes);
                println!("pay_to: evm {}", t.pay_to_evm.as_deref().unwrap_or("-"));
                println!("pay_to: solana {}", t.pay_to_solana.as_deref().unwrap_or("-"));
                Ok(())
            }
            TenantAction::SetPlan { id, tier } => {
                change(
                    TenantChange {
                        plan: Some(tier),
                        ..Default::default()
                    },
                    id,
                )
                .await
            }
            TenantAction::Suspend { id } => {
                change(
                    TenantChange {
                        status: Some("suspended".into()),
                        ..Default::default()
                    },
                    id,
                )
                .await
            }
            TenantAction::Resume { id } => {
                change(
                    TenantChange {
                        status: Some("active".into()),
                        ..Default::default()
                    },
                    id,
                )
                .await
            }
        }
    })
}

fn key_cmd(config: &std::path::Path, action: KeyAction) -> Result<(), String> {
    use tollgate::tenancy::ops;
    with_store(config, async |store, _| match action {
        KeyAction::Create {
            tenant,
            name,
            scopes,
            test,
        } => {
            store
                .tenant(&tenant)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no tenant {tenant}"))?;
            let (row, key) = ops::create_key(store, &tenant, &name, &scopes, !test, now_ms())
                .await
                .map_err(|e| e.to_string())?;
            println!("{}  {}", row.id, row.name);
            println!("api key (shown once): {key}");
            Ok(())
        }
        KeyAction::List { tenant } => {
            for k in store.keys_of(&tenant).await.map_err(|e| e.to_string())? {
                println!(
                    "{}  {}…  {:<16} scopes [{}]{}",
                    k.id,
                    k.prefix,
                    k.name,
                    k.scopes,
                    if k.revoked_at.is_some() { "  revoked" } else { "" }
                );
            }
            Ok(())
        }
        KeyAction::Revoke { tenant, key_id } => {
            store
                .revoke_key(&tenant, &key_id, now_ms())
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("tenant {tenant} has no live key {key_id}"))?;
            println!("revoked {key_id}");
            Ok(())
        }
    })
}

fn migrate(config: &std::path::Path) -> Result<(), String> {
    let (settings, _) = tollgate::config::load_any(config).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store = tollgate::store::Store::connect(&settings.database)
            .await
            .map_err(|e| e.to_string())?;
        store.close().await;
        println!("{}: schema is current", settings.database);
        Ok(())
    })
}
