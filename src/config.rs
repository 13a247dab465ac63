//! The TOML configuration: schema, defaults, and validation whose every error names the key and the fix.
//!
//! Loading turns the file into the runtime model ([`Settings`] for the process, [`Tenant`] for the
//! one tenant a drop-in config describes). Hosted mode builds the same [`Tenant`] from the database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy::primitives::{Address, U256};
use serde::Deserialize;

use crate::money::parse_price;
use crate::reading::{EscapedSlashes, MethodOverride, PathCase, PathParameters, Rules};
use crate::routes::{MethodMatch, PatternError, RouteTable};
use crate::tenant::{AnswerWhen, Pricing, Route, SettleTiming, Tenant, Upstream};
use crate::x402::network::{builtin, Family, Network};
use crate::x402::AmountMatch;
use crate::x402::Offer;

/// What can go wrong reading a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid TOML for tollgate:\n{source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("{path} has {} problem(s):\n  - {}", .problems.len(), .problems.join("\n  - "))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

// ---------------------------------------------------------------------------------------------
// The file's shape.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address the proxy listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The API tollgate sits in front of.
    pub upstream: Option<String>,
    /// Keep the client's Host header instead of the upstream's (nginx: `proxy_set_header Host $host`).
    #[serde(default)]
    pub preserve_host: bool,
    /// `sqlite://path` (created on first start) or `postgres://…`.
    #[serde(default = "default_database")]
    pub database: String,
    /// Where payments go on EVM networks (an address).
    #[serde(alias = "payTo")]
    pub pay_to: Option<String>,
    /// Where payments go on Solana networks (a wallet; its USDC token account receives them).
    pub pay_to_solana: Option<String>,
    /// Base of the resource URLs in 402 answers; otherwise built from Host and X-Forwarded-*.
    pub public_url: Option<String>,
    /// Price every route not listed (otherwise unlisted routes are free).
    pub default_price: Option<PriceValue>,
    /// Worker threads for the proxy (default: the number of CPUs).
    pub threads: Option<usize>,
    /// Write the process id here at start (for `tollgate reload` and init systems).
    pub pid_file: Option<PathBuf>,
    /// Where a graceful upgrade hands the listening sockets over (`serve --upgrade`, SIGQUIT).
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: PathBuf,
    #[serde(default)]
    pub settlement: SettlementConfig,
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkConfig>,
    #[serde(default)]
    pub cors: CorsConfig,
    /// How requests are read, so that what is priced is what the upstream serves.
    #[serde(default)]
    pub request: RequestConfig,
    /// Resource bounds: request heads, deadlines, connections, shutdown.
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The management API's listener (on by default in hosted mode).
    pub api: Option<ApiConfig>,
    /// Prometheus metrics and health (`/metrics`, `/status`, `/status/ready`).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// TLS on the proxy listener.
    pub tls: Option<TlsConfig>,
    /// Rate limits per client IP, payer and API key (hosted plans' default).
    #[serde(default)]
    pub rate_limits: crate::ratelimit::RateLimitsConfig,
    /// Hosted mode: many tenants from the database instead of the one this file describes.
    pub hosted: Option<HostedConfig>,
    /// Plans of the hosted service (default: SAAS.md's free / starter / pro / enterprise).
    #[serde(default)]
    pub plans: BTreeMap<String, PlanConfig>,
}

/// `[api]`: the management API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "default_api_listen")]
    pub listen: String,
    /// Drop-in mode: the SHA-256 (hex) of each bearer key the facilitator endpoints accept
    /// (`printf %s "$KEY" | sha256sum`), besides `TOLLGATE_ADMIN_KEY`. The keys themselves are
    /// never written down.
    #[serde(default)]
    pub facilitator_keys: Vec<String>,
}

fn default_api_listen() -> String {
    "127.0.0.1:8403".into()
}

/// `[tls]`: the proxy listener speaks HTTPS with this certificate (re-read at each reload, so that
/// a renewed certificate is picked up without a restart).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM (leaf first).
    pub cert_file: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[metrics]`: Prometheus `/metrics` and the health checks, on their own listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
            enabled: true,
        }
    }
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9402".into()
}

/// `[hosted]`: the multi-tenant service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostedConfig {
    /// Tenants answer at `{slug}.{base_domain}`.
    pub base_domain: Option<String>,
    /// Tenants also answer at `/t/{slug}/…` on any host.
    #[serde(default = "yes")]
    pub path_prefix: bool,
    /// Let tenants' upstreams be loopback, private, link-local or cloud-metadata addresses (a
    /// deployment whose tenants' APIs run beside it); off by default (SSRF).
    #[serde(default)]
    pub allow_private_upstreams: bool,
    /// Where an over-quota answer sends a tenant to upgrade.
    #[serde(default = "default_upgrade_url")]
    pub upgrade_url: String,
    /// How long a tenant's settings are cached by a gateway: the bound for a change made on one
    /// instance to reach the others.
    #[serde(default = "default_tenant_cache")]
    pub tenant_cache_secs: u64,
    /// How long a key lookup is cached: the bound for a revocation made on one instance to reach
    /// the others (the instance that revoked it forgets it at once).
    #[serde(default = "default_key_cache")]
    pub key_cache_secs: u64,
    /// Proof verification (`POST /verify`): the least confirmations a transfer needs.
    #[serde(default = "default_proof_confirmations")]
    pub proof_confirmations: u64,
    /// Proof verification: the oldest transfer accepted, in seconds (0: any age).
    #[serde(default)]
    pub proof_max_age_secs: u64,
}

fn default_upgrade_url() -> String {
    "https://tollgate.example/pricing".into()
}
fn default_tenant_cache() -> u64 {
    5
}
fn default_key_cache() -> u64 {
    30
}
fn default_proof_confirmations() -> u64 {
    1
}

/// `[plans.NAME]`: one plan of the hosted service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// Verifications a month; -1 for unlimited.
    pub verifications: i64,
    /// This plan's rate limits (otherwise `[rate_limits]`'s).
    pub rate_limits: Option<crate::ratelimit::RateLimitsConfig>,
    /// Chains enabled (test networks are enabled on every plan); `["*"]` for every configured one.
    pub chains: Vec<String>,
    #[serde(default)]
    pub price_usd: u64,
    /// Gas the relayer may spend a month on one tenant's settlements (default: 100,000 per
    /// verification; -1 unlimited).
    pub gas_per_month: Option<i64>,
}

/// `[request]`: what the upstream makes of a request, so that tollgate reads it the same way.
/// Every default is the safe one (README, Security model, says which upstream needs which).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// `%2F` / `%5C` in a path: `reject` (400), `decode` (forwarded as `/`), `keep` (forwarded
    /// encoded, priced under both readings).
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
    /// `//` becomes `/` in the forwarded path.
    #[serde(default = "yes")]
    pub merge_slashes: bool,
    /// `any`: the upstream may ignore letter case (Express, ASP.NET); `exact`: it does not.
    #[serde(default)]
    pub path_case: PathCase,
    /// `;` in a path: `price` (priced as Spring/Tomcat read it too), `reject` (400), `literal`.
    #[serde(default)]
    pub path_parameters: PathParameters,
    /// `/x.json` is priced as `/x` too (Rails).
    #[serde(default = "yes")]
    pub format_suffixes: bool,
    /// `X-HTTP-Method-Override` & co, `_method`: `price` (under every method they could name) or `reject`.
    #[serde(default)]
    pub method_override: MethodOverride,
    /// Bodies on GET, HEAD, OPTIONS and TRACE (Elasticsearch-style APIs need them).
    #[serde(default)]
    pub bodies_on_get: bool,
    /// Forward header names with `_` (nginx drops them: some upstreams read `X_A` as `X-A`).
    #[serde(default)]
    pub underscores_in_headers: bool,
    /// Reuse the upstream connection after a request with a body. Off, such requests carry
    /// `Connection: close` upstream, so a body the upstream did not read dies with the connection
    /// instead of being read as the next request.
    #[serde(default)]
    pub reuse_upstream_after_body: bool,
}

impl Default for RequestConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl RequestConfig {
    pub fn rules(&self) -> Rules {
        Rules {
            escaped_slashes: self.escaped_slashes,
            keep_empty_segments: !self.merge_slashes,
            path_case: self.path_case,
            path_parameters: self.path_parameters,
            no_format_suffixes: !self.format_suffixes,
            method_override: self.method_override,
            allow_get_bodies: self.bodies_on_get,
            keep_underscored_headers: self.underscores_in_headers,
            reuse_upstream_after_body: self.reuse_upstream_after_body,
        }
    }
}

/// `[limits]`: what one client can hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request head (request line and headers); larger is answered 431.
    #[serde(default = "default_max_head")]
    pub max_head_bytes: usize,
    /// From a request's first byte to the end of its head; slower is answered 408 and closed.
    #[serde(default = "default_head_timeout")]
    pub head_timeout_secs: u64,
    /// How long an idle keep-alive connection is kept.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Most client connections at once (default: what the open-file limit allows); more are
    /// answered 503 and closed.
    pub max_connections: Option<usize>,
    /// On SIGTERM, how long requests in flight may take to finish.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

fn yes() -> bool {
    true
}
fn default_max_head() -> usize {
    32 * 1024
}
fn default_head_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_grace() -> u64 {
    30
}

fn default_upgrade_sock() -> PathBuf {
    PathBuf::from("/tmp/tollgate_upgrade.sock")
}

fn default_listen() -> String {
    "0.0.0.0:8402".into()
}
fn default_database() -> String {
    "sqlite://tollgate.db".into()
}

/// A price: `"$0.01"`, `"10000"` (atomic units) or `10000`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum PriceValue {
    Text(String),
    Atomic(u64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementConfig {
    /// `local` (tollgate's relayer key sends the transfer) or `facilitator` (an x402 facilitator does).
    #[serde(default)]
    pub mode: SettlementMode,
    /// Environment variable holding the relayer's private key (hex), or several keys separated by
    /// commas, spaces or new lines (settlement batches are spread over them).
    #[serde(default = "default_relayer_env")]
    pub relayer_key_env: String,
    /// A file holding the relayer's private key, instead of the environment.
    pub relayer_key_file: Option<PathBuf>,
    /// Environment variable holding the Solana fee payer's keypair (base58, or solana-keygen's
    /// JSON array of 64 bytes).
    #[serde(default = "default_solana_env")]
    pub solana_key_env: String,
    /// A file holding the Solana fee payer's keypair (solana-keygen's JSON), instead of the environment.
    pub solana_key_file: Option<PathBuf>,
    /// Blocks to wait on top of the one that includes the transfer (1 = the receipt is enough).
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// How long to wait for a receipt before recording the payment as pending.
    #[serde(default = "default_receipt_timeout")]
    pub receipt_timeout_secs: u64,
    /// How often to ask for a receipt while waiting.
    #[serde(default = "default_receipt_poll")]
    pub receipt_poll_ms: u64,
    /// How often unfinished payments (pending receipts, claims left by a crash) are reconciled.
    #[serde(default = "default_reconcile_every")]
    pub reconcile_interval_secs: u64,
    /// How old a claimed or pending payment must be before reconciliation judges it.
    pub reconcile_after_secs: Option<u64>,
    /// Facilitator mode: its base URL (`/verify` and `/settle` are appended).
    pub facilitator_url: Option<String>,
    /// Facilitator mode: environment variable holding a bearer token, if it wants one.
    #[serde(default = "default_facilitator_token_env")]
    pub facilitator_token_env: String,
    /// Facilitator mode: how long one verify or settle call may take. A settle that takes longer is
    /// pending (reconciled from the chain), not refused.
    #[serde(default = "default_facilitator_timeout")]
    pub facilitator_timeout_secs: u64,
    /// Routes that answer before the transfer is on chain (`answer = "verified"` / `"submitted"`):
    /// the most one payer may have answered but not yet settled (`"$1.00"`). Past it, its requests
    /// wait for the receipt like `confirmed` ones.
    #[serde(default = "default_unsettled_per_payer")]
    pub max_unsettled_per_payer: String,
    /// The same bound over every payer of this gateway.
    #[serde(default = "default_unsettled_total")]
    pub max_unsettled_total: String,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            mode: SettlementMode::Local,
            relayer_key_env: default_relayer_env(),
            relayer_key_file: None,
            solana_key_env: default_solana_env(),
            solana_key_file: None,
            confirmations: default_confirmations(),
            receipt_timeout_secs: default_receipt_timeout(),
            receipt_poll_ms: default_receipt_poll(),
            reconcile_interval_secs: default_reconcile_every(),
            reconcile_after_secs: None,
            facilitator_url: None,
            facilitator_token_env: default_facilitator_token_env(),
            facilitator_timeout_secs: default_facilitator_timeout(),
            max_unsettled_per_payer: default_unsettled_per_payer(),
            max_unsettled_total: default_unsettled_total(),
        }
    }
}

fn default_unsettled_per_payer() -> String {
    "$1.00".into()
}

fn default_unsettled_total() -> String {
    "$100.00".into()
}

fn default_solana_env() -> String {
    "TOLLGATE_SOLANA_KEY".into()
}

fn default_relayer_env() -> String {
    "TOLLGATE_RELAYER_KEY".into()
}
fn default_confirmations() -> u64 {
    1
}
fn default_receipt_timeout() -> u64 {
    30
}
fn default_receipt_poll() -> u64 {
    100
}
fn default_reconcile_every() -> u64 {
    30
}
fn default_facilitator_timeout() -> u64 {
    30
}
fn default_facilitator_token_env() -> String {
    "TOLLGATE_FACILITATOR_TOKEN".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SettlementMode {
    #[default]
    Local,
    Facilitator,
}

/// One accepted network. Every field but `rpc_url` defaults from the built-in table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub rpc_url: Option<String>,
    pub chain_id: Option<u64>,
    /// CAIP-2 id for a network tollgate does not know (`eip155:<chain_id>` by default).
    pub caip2: Option<String>,
    pub usdc: Option<String>,
    pub eip712_name: Option<String>,
    pub eip712_version: Option<String>,
    /// Gas limit for `transferWithAuthorization` (it uses ~60–110k).
    pub gas_limit: Option<u64>,
    /// Timeout of one RPC call.
    pub rpc_timeout_ms: Option<u64>,
    /// Most payments settled in one transaction through Multicall3 (1: never batch).
    pub max_batch: Option<usize>,
    /// While settlements are busy, how long (ms) a batch may wait for more payments (0: never).
    pub batch_window_ms: Option<u64>,
    /// The chain's block interval (ms; Base 2000): a busy relayer then sends one batch per block,
    /// just before the block is due. 0 (the default): batches go out as they form.
    pub block_time_ms: Option<u64>,
    /// Solana: the fee payer to name in 402s when this process does not hold its key (facilitator
    /// mode); otherwise the key's own public key.
    pub fee_payer: Option<String>,
    /// Solana: most compute units a client's transaction may ask the fee payer to pay for.
    pub max_compute_units: Option<u32>,
    /// Solana: highest priority fee (micro-lamports per compute unit) the fee payer pays.
    pub max_compute_unit_price: Option<u64>,
    /// Solana: the fee payer's SOL balance (lamports) under which the start-up check warns.
    pub min_fee_payer_lamports: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call priced routes from a browser; `["*"]` allows any.
    #[serde(default = "default_origins")]
    pub allow_origins: Vec<String>,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allow_origins: default_origins(),
        }
    }
}

fn default_origins() -> Vec<String> {
    vec!["*".into()]
}

/// One priced (or free) route: a `[[routes]]` table, and an element of a hosted tenant's `routes`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `GET`, `POST`, … or `*` (the default) for any method.
    pub method: Option<String>,
    /// `/exact`, `/prefix/*` or `/with/{param}`.
    pub path: String,
    /// `"$0.01"`, atomic units, or `"free"`.
    pub price: Option<PriceValue>,
    /// Networks accepted on this route (default: every configured network).
    pub networks: Option<Vec<String>>,
    #[serde(default)]
    pub description: String,
    #[serde(alias = "mimeType")]
    pub mime_type: Option<String>,
    #[serde(alias = "maxTimeoutSeconds")]
    pub max_timeout_seconds: Option<u64>,
    /// `before`: settle, then forward. `after`: forward, settle only if the upstream answered < 400.
    #[serde(default)]
    pub settle: SettleTiming,
    /// When the paid request is answered: `confirmed` (the transfer's receipt; default),
    /// `submitted` (the node accepted its transaction) or `verified` (checked and claimed; the
    /// transfer follows in the next batch). The faster ones are bounded by the settlement section's
    /// `max_unsettled_per_payer` / `max_unsettled_total`.
    #[serde(default, skip_serializing_if = "is_confirmed")]
    pub answer: AnswerWhen,
    /// `exact` (the value must equal the price) or `at_least`.
    #[serde(default)]
    pub amount: AmountMatch,
    /// The payment-identifier extension: `off` (default), `optional` or `required`. With an id, a
    /// paid request is idempotent: the same payment sent again gets the first answer, replayed.
    #[serde(default, alias = "paymentIdentifier", skip_serializing_if = "is_off")]
    pub payment_identifier: crate::x402::identifier::IdPolicy,
    /// Discovery: `true` publishes the route in the facilitator's catalog (`/discovery/resources`,
    /// the bazaar); `false` keeps it out of the proxy's `/.well-known/x402` too (which lists every
    /// other priced route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discoverable: Option<bool>,
}

fn is_confirmed(a: &AnswerWhen) -> bool {
    *a == AnswerWhen::Confirmed
}

fn is_off(p: &crate::x402::identifier::IdPolicy) -> bool {
    *p == crate::x402::identifier::IdPolicy::Off
}

// ---------------------------------------------------------------------------------------------
// The runtime model.

/// Process-wide settings (what is not a tenant's).
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: String,
    pub database: String,
    pub threads: usize,
    pub pid_file: Option<PathBuf>,
    pub upgrade_sock: PathBuf,
    pub public_url: Option<String>,
    pub settlement: Settlement,
    /// Reconciliation: how often, and how old an unfinished payment must be.
    pub reconcile_every: std::time::Duration,
    pub reconcile_after: std::time::Duration,
    /// Bounds on money answered but not yet settled (`answer = "verified"` / `"submitted"`).
    pub exposure: crate::payment::exposure::Limits,
    pub networks: Vec<NetworkSettings>,
    pub cors_origins: Vec<String>,
    pub limits: LimitsConfig,
    /// The management API's address, when it runs.
    pub api_listen: Option<std::net::SocketAddr>,
    /// The metrics listener's address (`None`: turned off).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[api] facilitator_keys`, lower-case hex.
    pub facilitator_keys: Vec<String>,
    /// Hosted mode's settings; `None` for the drop-in gateway.
    pub hosted: Option<HostedConfig>,
    pub plans: crate::tenancy::Plans,
    /// How requests are read (the drop-in tenant's, and every hosted tenant's).
    pub rules: Rules,
    /// The drop-in tenant's rate limits (`[rate_limits]`); hosted tenants have their plan's.
    pub rate_limits: Option<Arc<crate::ratelimit::PlanLimits>>,
    /// `[tls]`: the proxy listener's certificate and key files.
    pub tls: Option<TlsConfig>,
    /// `[rate_limits] redis_url`, for plans whose limits are shared, and its key prefix.
    pub redis_url: Option<String>,
    pub redis_prefix: String,
}

/// How payments get on chain.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Local {
        key_source: KeySource,
        /// The Solana fee payer's keypair.
        solana_key: KeySource,
        confirmations: u64,
        receipt_timeout_secs: u64,
        receipt_poll_ms: u64,
    },
    Facilitator {
        url: String,
        token_env: String,
        timeout: std::time::Duration,
    },
}

/// Where the relayer key comes from. The key itself never lives in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(String),
    File(PathBuf),
}

impl KeySource {
    /// Reads the key; `None` when it is not set (a newcomer's first run).
    pub fn load(&self) -> Result<Option<String>, String> {
        match self {
            KeySource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_string())),
                _ => Ok(None),
            },
            KeySource::File(path) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim().to_string()))
                .map_err(|e| format!("key file {}: {e}", path.display())),
        }
    }
    /// How to tell a user to set it, `what` being the key ("the relayer's private key").
    pub fn describe(&self, what: &str) -> String {
        match self {
            KeySource::Env(var) => format!("set the environment variable {var} to {what}"),
            KeySource::File(p) => format!("put {what} in {}", p.display()),
        }
    }
}

/// A network as this process talks to it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSettings {
    pub network: Arc<Network>,
    pub rpc_url: String,
    /// Solana: what a client's transaction may ask of the fee payer.
    pub compute_units_max: u32,
    pub compute_unit_price_max: u64,
    pub min_fee_payer_lamports: u64,
    pub gas_limit: u64,
    pub rpc_timeout_ms: u64,
    pub max_batch: usize,
    pub batch_window_ms: u64,
    pub block_time_ms: u64,
}

/// Reads and validates a config file of either kind (drop-in: with its tenant; hosted: without).
pub fn load_any(path: &Path) -> Result<(Settings, Option<Tenant>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let file: FileConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.into(),
        source,
    })?;
    build_any(file).map_err(|problems| ConfigError::Invalid {
        path: path.into(),
        problems,
    })
}

/// Reads and validates a drop-in config file.
pub fn load(path: &Path) -> Result<(Settings, Tenant), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let file: FileConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.into(),
        source,
    })?;
    build(file).map_err(|problems| ConfigError::Invalid {
        path: path.into(),
        problems,
    })
}

/// Validates a drop-in config (one tenant), collecting every problem rather than stopping at the first.
pub fn build(file: FileConfig) -> Result<(Settings, Tenant), Vec<String>> {
    match build_any(file)? {
        (s, Some(t)) => Ok((s, t)),
        (_, None) => Err(vec![
            "[hosted]: this is a hosted config (tenants come from the database); run it with `tollgate serve`".into(),
        ]),
    }
}

/// What the Solana fee payer's key source holds, for messages.
pub const SOLANA_KEY: &str = "the fee payer's keypair (base58, or solana-keygen's JSON array)";

/// The Solana fee payer's public key, read from its key source.
fn solana_fee_payer(source: Option<&KeySource>) -> Result<String, String> {
    let Some(source) = source else {
        return Err("facilitator mode: set fee_payer to the facilitator's Solana fee payer (its /supported lists it as extra.feePayer)".into());
    };
    let how = source.describe(SOLANA_KEY);
    let text = source
        .load()?
        .ok_or_else(|| format!("no Solana fee payer key: {how}"))?;
    solana_pubkey_of(&text).map_err(|e| format!("the Solana fee payer key is unreadable ({e}): {how}"))
}

#[cfg(feature = "solana")]
fn solana_pubkey_of(text: &str) -> Result<String, String> {
    use solana_signer::Signer;
    crate::chains::solana::parse_keypair(text).map(|k| k.pubkey().to_string())
}

#[cfg(not(feature = "solana"))]
fn solana_pubkey_of(_text: &str) -> Result<String, String> {
    Err("this build has no Solana support".into())
}

/// Validates a config of either kind: the drop-in gateway's (with its tenant) or hosted mode's.
pub fn build_any(file: FileConfig) -> Result<(Settings, Option<Tenant>), Vec<String>> {
    let mut problems = Vec::new();
    let hosted = file.hosted.is_some();
    if hosted {
        for (set, key) in [
            (file.upstream.is_some(), "upstream"),
            (file.pay_to.is_some(), "pay_to"),
            (!file.routes.is_empty(), "routes"),
            (file.default_price.is_some(), "default_price"),
        ] {
            if set {
                problems.push(format!("{key}: set, but [hosted] serves tenants from the database, each with its own; remove it (tenants set theirs through the API or `tollgate tenant`)"));
            }
        }
    }

    if file.listen.parse::<std::net::SocketAddr>().is_err() {
        problems.push(format!(
            "listen: '{}' is not an address like '0.0.0.0:8402'",
            file.listen
        ));
    }
    if !(file.database.starts_with("sqlite:")
        || file.database.starts_with("postgres://")
        || file.database.starts_with("postgresql://"))
    {
        problems.push(format!(
            "database: '{}' is neither 'sqlite://FILE' nor 'postgres://USER@HOST/DB'",
            file.database
        ));
    }
    let upstream = match file.upstream.as_deref() {
        None if hosted => None,
        None => {
            problems.push("upstream: missing; set it to the API to protect, like 'http://127.0.0.1:8080'".into());
            None
        }
        Some(u) => match Upstream::parse(u, file.preserve_host) {
            Ok(up) => Some(up),
            Err(e) => {
                problems.push(format!("upstream: {e}"));
                None
            }
        },
    };
    let pay_to = match file.pay_to.as_deref() {
        None => None,
        Some(a) => match a.parse::<Address>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(format!(
                    "pay_to: '{a}' is not an EVM address like '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'"
                ));
                None
            }
        },
    };
    if let Some(u) = &file.public_url {
        if url::Url::parse(u)
            .map(|x| !matches!(x.scheme(), "http" | "https"))
            .unwrap_or(true)
        {
            problems.push(format!("public_url: '{u}' is not a URL like 'https://api.example.com'"));
        }
    }
    if file.threads == Some(0) {
        problems.push("threads: must be at least 1".into());
    }

    // Settlement.
    let s = &file.settlement;
    let settlement = match s.mode {
        SettlementMode::Local => {
            if s.facilitator_url.is_some() {
                problems.push("settlement.facilitator_url: set, but settlement.mode is 'local'; set mode = \"facilitator\" to use it".into());
            }
            if s.receipt_timeout_secs == 0 {
                problems.push("settlement.receipt_timeout_secs: must be at least 1".into());
            }
            if s.confirmations == 0 {
                problems.push(
                    "settlement.confirmations: must be at least 1 (1 = the block that includes the transfer)".into(),
                );
            }
            let key_source = match &s.relayer_key_file {
                Some(p) => KeySource::File(p.clone()),
                None => KeySource::Env(s.relayer_key_env.clone()),
            };
            let solana_key = match &s.solana_key_file {
                Some(p) => KeySource::File(p.clone()),
                None => KeySource::Env(s.solana_key_env.clone()),
            };
            Settlement::Local {
                key_source,
                solana_key,
                confirmations: s.confirmations.max(1),
                receipt_timeout_secs: s.receipt_timeout_secs.max(1),
                receipt_poll_ms: s.receipt_poll_ms.clamp(10, 10_000),
            }
        }
        SettlementMode::Facilitator => match &s.facilitator_url {
            Some(u) if url::Url::parse(u).is_ok() => {
                if s.facilitator_timeout_secs == 0 {
                    problems.push("settlement.facilitator_timeout_secs: must be at least 1".into());
                }
                Settlement::Facilitator {
                    url: u.trim_end_matches('/').to_string(),
                    token_env: s.facilitator_token_env.clone(),
                    timeout: std::time::Duration::from_secs(s.facilitator_timeout_secs.max(1)),
                }
            }
            Some(u) => {
                problems.push(format!(
                    "settlement.facilitator_url: '{u}' is not a URL like 'https://facilitator.example.com'"
                ));
                Settlement::Facilitator {
                    url: String::new(),
                    token_env: String::new(),
                    timeout: std::time::Duration::ZERO,
                }
            }
            None => {
                problems
                    .push("settlement.facilitator_url: missing; facilitator mode needs the facilitator's URL".into());
                Settlement::Facilitator {
                    url: String::new(),
                    token_env: String::new(),
                    timeout: std::time::Duration::ZERO,
                }
            }
        },
    };

    if s.reconcile_interval_secs == 0 {
        problems.push("settlement.reconcile_interval_secs: must be at least 1".into());
    }
    let reconcile_every = s.reconcile_interval_secs.max(1);
    // Long enough that a live settlement (receipt wait included) is never judged mid-flight.
    let reconcile_after = s.reconcile_after_secs.unwrap_or(s.receipt_timeout_secs + 60);

    let mut usd = |key: &str, text: &str| match crate::money::parse_price(text, 6) {
        Ok(v) if text.trim().starts_with('$') => u64::try_from(v).unwrap_or(u64::MAX),
        Ok(_) => {
            problems.push(format!("settlement.{key}: '{text}' is not a USD amount like '$1.00'"));
            0
        }
        Err(e) => {
            problems.push(format!("settlement.{key}: {e}"));
            0
        }
    };
    let exposure = crate::payment::exposure::Limits {
        per_payer: usd("max_unsettled_per_payer", &s.max_unsettled_per_payer),
        total: usd("max_unsettled_total", &s.max_unsettled_total),
    };

    // Networks.
    let mut networks: Vec<NetworkSettings> = Vec::new();
    let net_cfgs: Vec<(String, NetworkConfig)> = if file.networks.is_empty() {
        vec![("base".to_string(), NetworkConfig::default())]
    } else {
        file.networks.into_iter().collect()
    };
    for (name, nc) in net_cfgs {
        match build_network(&name, &nc) {
            Ok(n) => networks.push(n),
            Err(e) => problems.push(e),
        }
    }

    // Payees, per chain family.
    let has = |f: Family| networks.iter().any(|n| n.network.family == f);
    if !hosted && pay_to.is_none() && file.pay_to.is_none() && (has(Family::Evm) || networks.is_empty()) {
        problems.push("pay_to: missing; set it to the EVM address that receives payments".into());
    }
    let pay_to_solana = match file.pay_to_solana.as_deref() {
        Some(_) if hosted => {
            problems.push(
                "pay_to_solana: set, but [hosted] serves tenants from the database, each with its own; remove it"
                    .into(),
            );
            None
        }
        Some(a) if is_base58_key(a) => Some(a.to_string()),
        Some(a) => {
            problems.push(format!(
                "pay_to_solana: '{a}' is not a Solana wallet address (base58, like 'BXT1K8kzYXWMi6ihg7m9UqiHW4iJbJ69zumELHE9oBLe')"
            ));
            None
        }
        None if !hosted && has(Family::Solana) => {
            problems.push("pay_to_solana: missing; a Solana network is configured, so set it to the wallet that receives USDC there (its USDC token account must exist)".into());
            None
        }
        None => None,
    };
    // Solana's fee payer: the key's public half (or networks.<name>.fee_payer without a key).
    let solana_key = match &settlement {
        Settlement::Local { solana_key, .. } => Some(solana_key.clone()),
        Settlement::Facilitator { .. } => None,
    };
    for ns in networks.iter_mut().filter(|n| n.network.family == Family::Solana) {
        if ns.network.fee_payer.is_some() {
            continue;
        }
        match solana_fee_payer(solana_key.as_ref()) {
            Ok(fp) => Arc::make_mut(&mut ns.network).fee_payer = Some(fp),
            Err(e) => problems.push(format!("networks.{}: {e}", ns.network.name)),
        }
    }

    // Routes.
    let rules = file.request.rules();
    let payees = PayTo {
        evm: pay_to,
        solana: pay_to_solana.clone(),
    };
    let (routes, table, lower) = build_routes(
        file.routes,
        file.default_price,
        &networks,
        &payees,
        &rules,
        false,
        &mut problems,
    );
    let plans = crate::tenancy::Plans::from_config(&file.plans, &file.rate_limits, &mut problems);
    let rate_limits = crate::ratelimit::PlanLimits::build(
        "rate_limits",
        "drop-in",
        &file.rate_limits,
        file.rate_limits.redis_url.as_deref(),
        &mut problems,
    );
    if let Some(u) = &file.rate_limits.redis_url {
        if !(u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("redis+unix://")) {
            problems.push(format!(
                "rate_limits.redis_url: '{u}' is not a Redis URL like 'redis://127.0.0.1:6379'"
            ));
        }
    }
    let mut facilitator_keys = Vec::new();
    for (i, k) in file.api.iter().flat_map(|a| a.facilitator_keys.iter()).enumerate() {
        let k = k.trim().to_ascii_lowercase();
        if k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()) {
            facilitator_keys.push(k);
        } else {
            problems.push(format!(
                "api.facilitator_keys[{i}]: not a SHA-256 in hex; write the key's digest (printf %s \"$KEY\" | sha256sum), never the key"
            ));
        }
    }
    let api_listen = match (&file.api, hosted) {
        (Some(a), _) => Some(a.listen.clone()),
        (None, true) => Some(default_api_listen()),
        (None, false) => None,
    }
    .and_then(|a| match a.parse::<std::net::SocketAddr>() {
        Ok(x) => Some(x),
        Err(_) => {
            problems.push(format!("api.listen: '{a}' is not an address like '127.0.0.1:8403'"));
            None
        }
    });
    let metrics_listen = match (
        file.metrics.enabled,
        file.metrics.listen.parse::<std::net::SocketAddr>(),
    ) {
        (false, _) => None,
        (true, Ok(a)) => Some(a),
        (true, Err(_)) => {
            problems.push(format!(
                "metrics.listen: '{}' is not an address like '127.0.0.1:9402'",
                file.metrics.listen
            ));
            None
        }
    };
    if let Some(h) = &file.hosted {
        if h.base_domain.is_none() && !h.path_prefix {
            problems.push("hosted: neither base_domain nor path_prefix is set, so no request could name its tenant; set base_domain = \"gw.example.com\" or path_prefix = true".into());
        }
        if h.proof_confirmations == 0 {
            problems.push("hosted.proof_confirmations: must be at least 1".into());
        }
    }
    let l = &file.limits;
    if l.max_head_bytes < 1024 || l.max_head_bytes > 1024 * 1024 {
        problems.push(format!(
            "limits.max_head_bytes: {} is outside 1024..=1048576; payment headers alone can be 16 KiB, so 32768 is a good value",
            l.max_head_bytes
        ));
    }
    if l.head_timeout_secs == 0 || l.idle_timeout_secs == 0 {
        problems.push("limits.head_timeout_secs and limits.idle_timeout_secs: must be at least 1".into());
    }
    if l.max_connections == Some(0) {
        problems.push(
            "limits.max_connections: must be at least 1 (leave it out to derive it from the open-file limit)".into(),
        );
    }

    if let Some(t) = &file.tls {
        if let Err(e) = crate::conn::acceptor(&t.cert_file, &t.key_file) {
            problems.push(e);
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let settings = Settings {
        listen: file.listen,
        database: file.database,
        pid_file: file.pid_file,
        upgrade_sock: file.upgrade_sock,
        threads: file
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        public_url: file.public_url.map(|u| u.trim_end_matches('/').to_string()),
        settlement,
        reconcile_every: std::time::Duration::from_secs(reconcile_every),
        reconcile_after: std::time::Duration::from_secs(reconcile_after),
        exposure,
        networks,
        cors_origins: file.cors.allow_origins,
        limits: file.limits,
        api_listen,
        metrics_listen,
        facilitator_keys,
        hosted: file.hosted,
        plans,
        rules: rules.clone(),
        rate_limits: rate_limits.clone(),
        tls: file.tls,
        redis_url: file.rate_limits.redis_url.clone(),
        redis_prefix: file
            .rate_limits
            .redis_prefix
            .clone()
            .unwrap_or_else(|| "tollgate".into()),
    };
    if hosted {
        return Ok((settings, None));
    }
    let tenant = Tenant {
        id: "default".into(),
        pay_to: pay_to.unwrap_or(Address::ZERO),
        pay_to_solana,
        upstream: upstream.expect("checked above"),
        routes,
        table,
        lower,
        rules,
        hosted: None,
        number: crate::ratelimit::tenant_number("default"),
        limits: rate_limits,
        served_free: Default::default(),
    };
    Ok((settings, Some(tenant)))
}

/// The routes of one tenant, from the drop-in file's `[[routes]]` or a hosted tenant's stored
/// specs: offers on `networks` (the ones its plan allows) paid to `pay_to`. Problems name the key.
pub fn build_routes(
    mut route_cfgs: Vec<RouteConfig>,
    default_price: Option<PriceValue>,
    networks: &[NetworkSettings],
    pay_to: &PayTo,
    rules: &Rules,
    lenient: bool,
    problems: &mut Vec<String>,
) -> (Vec<Route>, RouteTable, Option<RouteTable>) {
    let mut routes = Vec::new();
    let mut table = RouteTable::new();
    let all_networks: Vec<String> = networks.iter().map(|n| n.network.name.clone()).collect();

    let listed = route_cfgs.len();
    if let Some(p) = default_price {
        route_cfgs.push(RouteConfig {
            method: None,
            path: "/*".into(),
            price: Some(p),
            networks: None,
            description: String::new(),
            mime_type: None,
            max_timeout_seconds: None,
            settle: SettleTiming::default(),
            answer: AnswerWhen::default(),
            amount: AmountMatch::default(),
            payment_identifier: Default::default(),
            discoverable: None,
        });
    }
    for (i, rc) in route_cfgs.into_iter().enumerate() {
        let key = if i < listed {
            format!("routes[{i}]")
        } else {
            "default_price".into()
        };
        let method = match rc.method.as_deref().map(str::trim) {
            None | Some("*") | Some("ANY") | Some("any") => MethodMatch::Any,
            Some(m) => match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => MethodMatch::Only(m),
                Err(_) => {
                    problems.push(format!(
                        "{key}.method: '{m}' is not an HTTP method like 'GET' (or '*' for any)"
                    ));
                    continue;
                }
            },
        };
        if let Err(e) = table.insert(method.clone(), &rc.path, i) {
            problems.push(format!("{key}.path: {e}"));
            continue;
        }
        let pricing = match build_pricing(&key, &rc, networks, &all_networks, pay_to, lenient) {
            Ok(p) => p,
            Err(mut e) => {
                problems.append(&mut e);
                None
            }
        };
        routes.push(Route::new(
            method,
            rc.path.clone(),
            pricing.map(Arc::new),
            rc.discoverable,
        ));
    }

    // Routes that differ only by letter case are one route to an upstream that ignores case.
    let lower = (rules.path_case == PathCase::Any).then(|| {
        let mut lower = RouteTable::new();
        for (i, r) in routes.iter().enumerate() {
            if let Err(PatternError::Duplicate(j)) = lower.insert(r.method.clone(), &r.pattern.to_ascii_lowercase(), i) {
                problems.push(format!(
                    "routes[{i}].path: '{}' is the same route as routes[{j}] ('{}') when letter case is ignored; remove one, or set request.path_case = \"exact\" if the upstream matches case",
                    r.pattern, routes[j].pattern
                ));
            }
        }
        lower
    });
    (routes, table, lower)
}

fn build_network(name: &str, nc: &NetworkConfig) -> Result<NetworkSettings, String> {
    let key = format!("networks.{name}");
    let known = builtin(name);
    if known.map(|k| k.family) == Some(Family::Solana) {
        return build_solana_network(name, known.expect("checked"), nc);
    }
    for (set, field) in [
        (nc.fee_payer.is_some(), "fee_payer"),
        (nc.max_compute_units.is_some(), "max_compute_units"),
        (nc.max_compute_unit_price.is_some(), "max_compute_unit_price"),
        (nc.min_fee_payer_lamports.is_some(), "min_fee_payer_lamports"),
    ] {
        if set {
            return Err(format!("{key}.{field}: a Solana setting; EVM networks take rpc_url, chain_id, caip2, usdc, eip712_name, eip712_version, gas_limit, rpc_timeout_ms, max_batch, batch_window_ms, block_time_ms"));
        }
    }
    let mut net = match known {
        Some(k) => Network::from_known(k),
        None => {
            let chain_id = nc.chain_id.ok_or_else(|| {
                format!("{key}: '{name}' is not a built-in network (base, base-sepolia, ethereum, polygon, avalanche); give chain_id, usdc, eip712_name and eip712_version")
            })?;
            Network {
                name: name.to_string(),
                caip2: format!("eip155:{chain_id}"),
                family: Family::Evm,
                chain_id,
                asset: String::new(),
                eip712_name: String::new(),
                eip712_version: "2".into(),
                decimals: 6,
                fee_payer: None,
            }
        }
    };
    if let Some(c) = nc.chain_id {
        net.chain_id = c;
        if known.is_some_and(|k| k.chain_id != c) {
            net.caip2 = format!("eip155:{c}");
        }
    }
    if let Some(c) = &nc.caip2 {
        net.caip2 = c.clone();
    }
    if let Some(u) = &nc.usdc {
        let a: Address = u
            .parse()
            .map_err(|_| format!("{key}.usdc: '{u}' is not an EVM address"))?;
        net.asset = a.to_checksum(None);
    }
    if net.asset.is_empty() {
        return Err(format!(
            "{key}.usdc: missing; give the USDC contract address on this chain"
        ));
    }
    if let Some(n) = &nc.eip712_name {
        net.eip712_name = n.clone();
    }
    if net.eip712_name.is_empty() {
        return Err(format!(
            "{key}.eip712_name: missing; read it from the USDC contract's name() (e.g. 'USD Coin')"
        ));
    }
    if let Some(v) = &nc.eip712_version {
        net.eip712_version = v.clone();
    }
    let rpc_url = nc
        .rpc_url
        .clone()
        .or_else(|| known.map(|k| k.default_rpc.to_string()))
        .unwrap_or_default();
    if url::Url::parse(&rpc_url).is_err() {
        return Err(format!(
            "{key}.rpc_url: '{rpc_url}' is not a URL like 'http://127.0.0.1:8545'"
        ));
    }
    Ok(NetworkSettings {
        network: Arc::new(net),
        rpc_url,
        // Solana settings: none on EVM.
        compute_units_max: 0,
        compute_unit_price_max: 0,
        min_fee_payer_lamports: 0,
        gas_limit: nc.gas_limit.unwrap_or(200_000),
        rpc_timeout_ms: nc.rpc_timeout_ms.unwrap_or(5_000),
        max_batch: nc.max_batch.unwrap_or(32).max(1),
        batch_window_ms: nc.batch_window_ms.unwrap_or(5),
        block_time_ms: nc.block_time_ms.unwrap_or(0),
    })
}

/// Most compute units a client's Solana transaction may ask the fee payer to pay for, by default.
pub const SOLANA_MAX_COMPUTE_UNITS: u32 = 400_000;
/// Highest priority fee (micro-lamports per compute unit) the fee payer pays, by default.
pub const SOLANA_MAX_COMPUTE_UNIT_PRICE: u64 = 5_000_000;

/// A built-in Solana network (`solana`, `solana-devnet`), with its RPC, mint and fee-payer limits.
/// The fee payer itself is set once the key is read ([`build_any`]).
fn build_solana_network(
    name: &str,
    k: &crate::x402::network::KnownNetwork,
    nc: &NetworkConfig,
) -> Result<NetworkSettings, String> {
    let key = format!("networks.{name}");
    if cfg!(not(feature = "solana")) {
        return Err(format!("{key}: this build has no Solana support (built without the `solana` feature); rebuild with default features or remove it"));
    }
    for (set, field) in [
        (nc.chain_id.is_some(), "chain_id"),
        (nc.eip712_name.is_some(), "eip712_name"),
        (nc.eip712_version.is_some(), "eip712_version"),
        (nc.gas_limit.is_some(), "gas_limit"),
        (nc.max_batch.is_some(), "max_batch"),
        (nc.batch_window_ms.is_some(), "batch_window_ms"),
        (nc.block_time_ms.is_some(), "block_time_ms"),
    ] {
        if set {
            return Err(format!("{key}.{field}: an EVM setting; Solana networks take rpc_url, usdc, fee_payer, max_compute_units, max_compute_unit_price, min_fee_payer_lamports"));
        }
    }
    let mut net = Network::from_known(k);
    if let Some(c) = &nc.caip2 {
        net.caip2 = c.clone();
    }
    if let Some(u) = &nc.usdc {
        if !is_base58_key(u) {
            return Err(format!(
                "{key}.usdc: '{u}' is not a Solana mint address (base58, 32 bytes)"
            ));
        }
        net.asset = u.clone();
    }
    if let Some(f) = &nc.fee_payer {
        if !is_base58_key(f) {
            return Err(format!(
                "{key}.fee_payer: '{f}' is not a Solana address (base58, 32 bytes)"
            ));
        }
        net.fee_payer = Some(f.clone());
    }
    let rpc_url = nc.rpc_url.clone().unwrap_or_else(|| k.default_rpc.to_string());
    if url::Url::parse(&rpc_url).is_err() {
        return Err(format!(
            "{key}.rpc_url: '{rpc_url}' is not a URL like 'http://127.0.0.1:8899'"
        ));
    }
    if nc.max_compute_units == Some(0) {
        return Err(format!(
            "{key}.max_compute_units: must be at least 1 (a USDC transfer needs about 6,000)"
        ));
    }
    Ok(NetworkSettings {
        network: Arc::new(net),
        rpc_url,
        compute_units_max: nc.max_compute_units.unwrap_or(SOLANA_MAX_COMPUTE_UNITS),
        compute_unit_price_max: nc.max_compute_unit_price.unwrap_or(SOLANA_MAX_COMPUTE_UNIT_PRICE),
        min_fee_payer_lamports: nc.min_fee_payer_lamports.unwrap_or(10_000_000),
        gas_limit: 0,
        rpc_timeout_ms: nc.rpc_timeout_ms.unwrap_or(5_000),
        max_batch: 1,
        batch_window_ms: 0,
        block_time_ms: 0,
    })
}

/// Whether `s` reads as a Solana address: base58 of 32 bytes.
pub fn is_base58_key(s: &str) -> bool {
    (32..=44).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l'))
        && base58_len(s) == Some(32)
}

/// The byte length `s` decodes to as base58 (None when it is not base58).
fn base58_len(s: &str) -> Option<usize> {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut bytes: Vec<u8> = Vec::new();
    for c in s.bytes() {
        let mut carry = ALPHABET.iter().position(|&a| a == c)? as u32;
        for b in bytes.iter_mut() {
            carry += (*b as u32) * 58;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zeros = s.bytes().take_while(|&b| b == b'1').count();
    Some(bytes.len() + zeros)
}

/// Where a tenant is paid: an EVM address and a Solana wallet, either optional.
#[derive(Debug, Clone, Default)]
pub struct PayTo {
    pub evm: Option<Address>,
    pub solana: Option<String>,
}

impl PayTo {
    /// The payee for a network of this family, as 402s send it.
    pub fn for_family(&self, f: Family) -> Option<String> {
        match f {
            Family::Evm => self.evm.map(|a| a.to_checksum(None)),
            Family::Solana => self.solana.clone(),
        }
    }
    /// A stand-in payee on every family (validating routes before a payee is set).
    pub fn placeholder() -> PayTo {
        PayTo {
            evm: Some(Address::ZERO),
            solana: Some("11111111111111111111111111111111".into()),
        }
    }
}

fn build_pricing(
    key: &str,
    rc: &RouteConfig,
    networks: &[NetworkSettings],
    all: &[String],
    pay_to: &PayTo,
    lenient: bool,
) -> Result<Option<Pricing>, Vec<String>> {
    let mut problems = Vec::new();
    let price_text = match &rc.price {
        None => {
            return Err(vec![format!(
                "{key}.price: missing; give a price like \"$0.01\", atomic units like \"10000\", or \"free\""
            )]);
        }
        Some(PriceValue::Text(t)) if t.trim().eq_ignore_ascii_case("free") => return Ok(None),
        Some(PriceValue::Text(t)) => t.clone(),
        Some(PriceValue::Atomic(n)) => n.to_string(),
    };
    let wanted = rc.networks.clone().unwrap_or_else(|| all.to_vec());
    if wanted.is_empty() && !lenient {
        problems.push(format!("{key}.networks: empty; list at least one of {all:?}"));
    }
    let max_timeout = rc.max_timeout_seconds.unwrap_or(60);
    if max_timeout == 0 {
        problems.push(format!("{key}.max_timeout_seconds: must be at least 1"));
    }
    let mut offers = Vec::new();
    for (j, w) in wanted.iter().enumerate() {
        let Some(ns) = networks.iter().find(|n| n.network.is_named(w)) else {
            // A hosted tenant's stored route may name a chain its plan no longer enables (or the
            // operator no longer runs): that offer is left out; the route stays priced.
            if lenient {
                continue;
            }
            problems.push(format!(
                "{key}.networks[{j}]: '{w}' is not configured; add [networks.{w}] or use one of {all:?}"
            ));
            continue;
        };
        let amount: U256 = match parse_price(&price_text, ns.network.decimals) {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("{key}.price: {e}"));
                break;
            }
        };
        if let Some(p) = pay_to.for_family(ns.network.family) {
            offers.push(Offer::exact(ns.network.clone(), amount, p, max_timeout));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Some(Pricing {
        offers,
        description: rc.description.clone(),
        mime_type: rc.mime_type.clone().unwrap_or_else(|| "application/json".into()),
        settle: rc.settle,
        answer: rc.answer,
        amount: rc.amount,
        payment_id: rc.payment_identifier,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        upstream = "http://127.0.0.1:8080"
        pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
        [networks.base]
        rpc_url = "http://127.0.0.1:8545"
    "#;

    fn problems(extra: &str) -> Vec<String> {
        let file: FileConfig = toml::from_str(&format!("{BASE}\n{extra}")).unwrap();
        build(file).err().unwrap_or_default()
    }

    #[test]
    fn answer_modes_and_their_exposure_bounds() {
        let file: FileConfig = toml::from_str(&format!(
            "{BASE}\n[settlement]\nmax_unsettled_per_payer = \"$0.25\"\n[[routes]]\npath = \"/v\"\nprice = \"$0.01\"\nanswer = \"verified\"\n[[routes]]\npath = \"/c\"\nprice = \"$0.01\""
        ))
        .unwrap();
        let (settings, tenant) = build(file).unwrap();
        assert_eq!(settings.exposure.per_payer, 250_000);
        assert_eq!(settings.exposure.total, 100_000_000, "the default: $100");
        let answer = |i: usize| tenant.routes[i].pricing.as_ref().unwrap().answer;
        assert_eq!((answer(0), answer(1)), (AnswerWhen::Verified, AnswerWhen::Confirmed));
        assert_eq!(
            problems("[settlement]\nmax_unsettled_total = \"100\""),
            vec!["settlement.max_unsettled_total: '100' is not a USD amount like '$1.00'"]
        );
        assert_eq!(
            problems("[settlement]\nmax_unsettled_per_payer = \"$1.x\""),
            vec!["settlement.max_unsettled_per_payer: '$1.x' is not a USD amount like '$0.01' (at most 6 decimal places)"]
        );
        let bad = toml::from_str::<FileConfig>(&format!(
            "{BASE}\n[[routes]]\npath = \"/v\"\nprice = \"$0.01\"\nanswer = \"soon\""
        ));
        assert!(
            bad.unwrap_err().to_string().contains("confirmed"),
            "names the accepted values"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let p = problems("[[routes]]\npath = \"/a\"\nprice = \"$0.01\"\n[[routes]]\npath = \"/b\"\nprice = \"$0.01\"\n[[routes]]\npath = \"/c\"\nprice = \"$0.0x\"");
        assert_eq!(
            p,
            vec!["routes[2].price: '$0.0x' is not a USD amount like '$0.01' (at most 6 decimal places)"]
        );
        let p = problems("[[routes]]\npath = \"/a\"\nprice = \"$1\"\nnetworks = [\"polygon\"]");
        assert!(
            p[0].starts_with("routes[0].networks[0]: 'polygon' is not configured; add [networks.polygon]"),
            "{p:?}"
        );
        let p = problems("[[routes]]\npath = \"a\"\nprice = \"$1\"");
        assert_eq!(p, vec!["routes[0].path: 'a' must start with '/'"]);
        let p = problems("[[routes]]\nmethod = \"G T\"\npath = \"/a\"\nprice = \"$1\"");
        assert!(
            p[0].starts_with("routes[0].method: 'G T' is not an HTTP method"),
            "{p:?}"
        );
        let p = problems("[[routes]]\npath = \"/a\"");
        assert!(p[0].starts_with("routes[0].price: missing"), "{p:?}");
        let p = problems("[[routes]]\npath = \"/a\"\nprice = \"$1\"\n[[routes]]\npath = \"/a\"\nprice = \"$2\"");
        assert_eq!(p, vec!["routes[1].path: same method and path as routes[0]"]);
    }

    #[test]
    fn collects_every_problem() {
        let file: FileConfig =
            toml::from_str("listen = \"nope\"\npay_to = \"0x12\"\ndatabase = \"mysql://x\"").unwrap();
        let p = build(file).unwrap_err();
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("upstream: missing")));
        assert!(p.iter().any(|m| m.starts_with("pay_to: '0x12' is not an EVM address")));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = toml::from_str::<FileConfig>(&format!("{BASE}\n[[routes]]\npath=\"/a\"\nprize=\"$1\"")).unwrap_err();
        assert!(err.to_string().contains("unknown field `prize`"), "{err}");
    }

    #[test]
    fn builds_offers_per_network_with_builtin_defaults() {
        let file: FileConfig = toml::from_str(&format!(
            "{BASE}\n[networks.base-sepolia]\n[[routes]]\nmethod=\"get\"\npath=\"/w/{{city}}\"\nprice=\"$0.01\"\nsettle=\"after\"\namount=\"at_least\"\n[[routes]]\npath=\"/free\"\nprice=\"free\""
        ))
        .unwrap();
        let (settings, tenant) = build(file).unwrap();
        assert_eq!(settings.networks.len(), 2);
        let r = &tenant.routes[0];
        let pricing = r.pricing.as_ref().unwrap();
        assert_eq!(pricing.offers.len(), 2);
        assert_eq!(pricing.offers[0].amount, U256::from(10_000u64));
        assert_eq!(pricing.offers[1].network.eip712_name, "USDC");
        assert_eq!(pricing.settle, SettleTiming::After);
        assert_eq!(pricing.amount, AmountMatch::AtLeast);
        assert!(tenant.routes[1].pricing.is_none());
        assert_eq!(tenant.table.find(&http::Method::GET, "/w/paris"), Some(0));
        assert_eq!(tenant.table.find(&http::Method::GET, "/other"), None);
    }

    #[test]
    fn default_price_covers_unlisted_routes() {
        let file: FileConfig = toml::from_str(&format!(
            "default_price = 500\n{BASE}\n[[routes]]\npath=\"/health\"\nprice=\"free\""
        ))
        .unwrap();
        let (_, tenant) = build(file).unwrap();
        let idx = tenant.table.find(&http::Method::POST, "/anything/else").unwrap();
        assert_eq!(
            tenant.routes[idx].pricing.as_ref().unwrap().offers[0].amount,
            U256::from(500u64)
        );
        let idx = tenant.table.find(&http::Method::GET, "/health").unwrap();
        assert!(tenant.routes[idx].pricing.is_none());
    }

    #[test]
    fn hosted_configs_leave_tenants_to_the_database() {
        let file: FileConfig = toml::from_str(&format!("{BASE}\n[hosted]\npath_prefix = true")).unwrap();
        let p = build_any(file).unwrap_err();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("upstream: set, but [hosted] serves tenants from the database"),
            "{p:?}"
        );
        let file: FileConfig = toml::from_str(
            "[hosted]\npath_prefix = false\n[plans.x]\nverifications = -5\nchains = []\n[api]\nlisten = \"nope\"",
        )
        .unwrap();
        let p = build_any(file).unwrap_err();
        assert!(
            p.iter()
                .any(|m| m.starts_with("plans.x.verifications: -5 is not a count")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.starts_with("plans.x.chains: empty")), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("api.listen: 'nope'")), "{p:?}");
        assert!(
            p.iter()
                .any(|m| m.starts_with("hosted: neither base_domain nor path_prefix")),
            "{p:?}"
        );
    }

    #[test]
    fn solana_needs_a_payee_and_a_fee_payer() {
        let p = problems("[networks.solana]");
        assert!(p.iter().any(|m| m.starts_with("pay_to_solana: missing")), "{p:?}");
        let file: FileConfig = toml::from_str(&format!(
            "pay_to_solana = \"0xabc\"\n{BASE}\n[networks.solana]\nfee_payer = \"BXT1K8kzYXWMi6ihg7m9UqiHW4iJbJ69zumELHE9oBLe\"\ngas_limit = 5"
        ))
        .unwrap();
        let p = build(file).err().unwrap_or_default();
        assert!(
            p.iter()
                .any(|m| m.starts_with("pay_to_solana: '0xabc' is not a Solana wallet")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("networks.solana.gas_limit: an EVM setting")),
            "{p:?}"
        );
        // BASE ends inside [networks.base]: a Solana key there is refused by name.
        let p = problems("max_compute_units = 5");
        assert!(
            p.iter()
                .any(|m| m.starts_with("networks.base.max_compute_units: a Solana setting")),
            "{p:?}"
        );
        assert!(is_base58_key("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"));
        assert!(is_base58_key("11111111111111111111111111111111"));
        assert!(!is_base58_key("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEG"));
        assert!(!is_base58_key("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"));
    }

    #[test]
    fn the_shipped_configs_are_valid() {
        let path = |f: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        load(&path("config/tollgate.toml")).unwrap_or_else(|e| panic!("{e}"));
        let (settings, tenant) = load_any(&path("config/hosted.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert!(tenant.is_none() && settings.hosted.is_some());
        assert_eq!(settings.plans, crate::tenancy::Plans::defaults());
        assert_eq!(settings.api_listen, Some("127.0.0.1:8403".parse().unwrap()));
        // The compose file's config, with its upstream (a Docker host name) pointed here.
        let text = std::fs::read_to_string(path("deploy/tollgate.compose.toml")).unwrap();
        let text = text.replace("host.docker.internal", "127.0.0.1");
        let file: FileConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let (settings, _) = build(file).unwrap_or_else(|p| panic!("{p:?}"));
        assert!(settings.database.starts_with("postgres://"));
        assert_eq!(settings.metrics_listen, Some("0.0.0.0:9402".parse().unwrap()));
    }
}
