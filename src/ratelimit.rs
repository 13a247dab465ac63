//! Rate limits: per client IP, per payer and per API key, set per plan (`[rate_limits]` for the
//! drop-in gateway and as hosted plans' default, `[plans.NAME.rate_limits]` per plan).
//!
//! Each limit is a GCRA token bucket ("100/s" lets a burst of 100 through, then one every 10 ms).
//! In one process the buckets are governor's (a lock-free keyed limiter, no I/O, checked in the
//! front's 402 path as well as in the proxy). A plan with `shared = true` keeps its buckets in Redis
//! instead, so that every gateway draws from the same ones: one Lua script per check (the same GCRA,
//! on Redis's clock), sent from the core runtime. If Redis does not answer in time, the check falls
//! back to this process's bucket and says so in the log: a limit is protection, not money, so it
//! degrades to per-instance counting rather than refusing traffic.
//!
//! A refusal is a [`Decision`]: 429 with `Retry-After` and `RateLimit-Limit` / `-Remaining` /
//! `-Reset` / `-Policy` (IETF httpapi-ratelimit-headers), counted in
//! `tollgate_rate_limited_total{scope}` and `tollgate_requests_total{outcome="rate_limited"}`.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{clock::Clock as _, Quota};
use serde::Deserialize;

/// `[rate_limits]` and `[plans.NAME.rate_limits]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Requests from one client IP address to one tenant, like "100/s" (every request: unpaid,
    /// paid and free routes alike).
    pub per_ip: Option<String>,
    /// Payments from one payer (after its signature is checked), like "10/s".
    pub per_payer: Option<String>,
    /// Management and facilitator API calls with one API key, like "50/s".
    pub per_key: Option<String>,
    /// Keep these buckets in Redis, shared by every gateway (needs `[rate_limits] redis_url`).
    #[serde(default)]
    pub shared: bool,
    /// Top level only: the Redis shared buckets live in, like "redis://127.0.0.1:6379".
    pub redis_url: Option<String>,
    /// Top level only: the prefix of this deployment's keys in that Redis (default "tollgate"), so
    /// that two deployments can share one Redis without sharing buckets.
    pub redis_prefix: Option<String>,
}

/// One limit: `count` requests per `per`, in a burst of up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub count: u32,
    pub per: Duration,
}

impl Limit {
    /// `"100/s"`, `"600/min"`, `"5000/h"` (also `sec`, `second`, `m`, `minute`, `hour`, `day`).
    pub fn parse(text: &str) -> Result<Limit, String> {
        let bad = || format!("'{text}' is not a rate like '100/s', '600/min' or '5000/h'");
        let (n, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().replace('_', "").parse().map_err(|_| bad())?;
        let secs = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3_600,
            "d" | "day" => 86_400,
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!(
                "'{text}' allows nothing; give at least 1, or leave the limit out"
            ));
        }
        Ok(Limit {
            count,
            per: Duration::from_secs(secs),
        })
    }

    /// The time one request's token takes to come back.
    fn interval(&self) -> Duration {
        (self.per / self.count).max(Duration::from_nanos(1))
    }

    fn quota(&self) -> Quota {
        Quota::with_period(self.interval())
            .expect("a non-zero interval")
            .allow_burst(NonZeroU32::new(self.count).expect("count > 0"))
    }
}

/// What a limit is kept on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ip,
    Payer,
    Key,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::Payer => "payer",
            Scope::Key => "key",
        }
    }
    fn who(self) -> &'static str {
        match self {
            Scope::Ip => "from this address",
            Scope::Payer => "from this payer",
            Scope::Key => "with this API key",
        }
    }
}

/// A refused request: what to tell the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub scope: Scope,
    pub limit: Limit,
    /// Requests left in the bucket (0 on a refusal).
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds until the next request can pass (at least 1).
    pub retry_after_secs: u64,
}

impl Decision {
    /// `Retry-After` and the `RateLimit-*` headers.
    pub fn headers(&self) -> [(&'static str, String); 5] {
        [
            ("retry-after", self.retry_after_secs.to_string()),
            ("ratelimit-limit", self.limit.count.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", self.reset_secs.to_string()),
            (
                "ratelimit-policy",
                format!("{};w={}", self.limit.count, self.limit.per.as_secs()),
            ),
        ]
    }

    /// One sentence for the client: the limit, who it is kept on, and when to come back.
    pub fn detail(&self) -> String {
        format!(
            "more than {} requests {} per {}; retry after {} s",
            self.limit.count,
            self.scope.who(),
            match self.limit.per.as_secs() {
                1 => "second".to_string(),
                60 => "minute".to_string(),
                3_600 => "hour".to_string(),
                86_400 => "day".to_string(),
                s => format!("{s} s"),
            },
            self.retry_after_secs
        )
    }

    /// The whole 429 as the front writes it (a JSON body, closing nothing).
    pub fn wire(&self, out: &mut Vec<u8>) {
        let body = format!(
            r#"{{"error":"rate_limited","scope":"{}","detail":"{}"}}"#,
            self.scope.as_str(),
            self.detail()
        );
        out.clear();
        out.extend_from_slice(
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncache-control: no-store\r\n",
        );
        for (k, v) in self.headers() {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(pingora_core::protocols::http::date::get_cached_date().as_bytes());
        out.extend_from_slice(b"\r\nconnection: keep-alive\r\n\r\n");
        out.extend_from_slice(body.as_bytes());
    }
}

type Keyed<K> =
    governor::RateLimiter<K, DashMapStateStore<K>, governor::clock::DefaultClock, StateInformationMiddleware>;

/// One limit's buckets in this process.
struct Local<K: Hash + Eq + Clone> {
    limit: Limit,
    buckets: Keyed<K>,
}

impl<K: Hash + Eq + Clone> Local<K> {
    fn new(limit: Limit) -> Self {
        Local {
            limit,
            buckets: governor::RateLimiter::dashmap(limit.quota()).with_middleware::<StateInformationMiddleware>(),
        }
    }

    fn check(&self, scope: Scope, key: &K) -> Result<(), Decision> {
        let interval = self.limit.interval();
        match self.buckets.check_key(key) {
            Ok(_) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                Err(Decision {
                    scope,
                    limit: self.limit,
                    remaining: 0,
                    retry_after_secs: ceil_secs(wait).max(1),
                    // Empty: the bucket fills one interval after the wait, `count` times over.
                    reset_secs: ceil_secs(wait + interval * self.limit.count.saturating_sub(1)),
                })
            }
        }
    }

    fn forget_idle(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// One plan's limits (the drop-in gateway has one plan: `[rate_limits]`).
pub struct PlanLimits {
    config: RateLimitsConfig,
    name: String,
    ip: Option<Local<(u64, IpAddr)>>,
    payer: Option<Local<String>>,
    key: Option<Local<String>>,
    shared: bool,
}

impl std::fmt::Debug for PlanLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanLimits")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

impl PartialEq for PlanLimits {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.config == other.config
    }
}
impl Eq for PlanLimits {}

impl PlanLimits {
    /// Builds a plan's limits from its table (`at` names it in errors: "rate_limits",
    /// "plans.free.rate_limits"); `None` when it sets none.
    pub fn build(
        at: &str,
        name: &str,
        c: &RateLimitsConfig,
        redis_url: Option<&str>,
        problems: &mut Vec<String>,
    ) -> Option<Arc<PlanLimits>> {
        let parse = |field: &str, v: &Option<String>, problems: &mut Vec<String>| {
            v.as_deref().and_then(|t| {
                Limit::parse(t)
                    .map_err(|e| problems.push(format!("{at}.{field}: {e}")))
                    .ok()
            })
        };
        let ip = parse("per_ip", &c.per_ip, problems);
        let payer = parse("per_payer", &c.per_payer, problems);
        let key = parse("per_key", &c.per_key, problems);
        if c.shared && redis_url.is_none() {
            problems.push(format!("{at}.shared: true, but no Redis is configured; set [rate_limits] redis_url = \"redis://127.0.0.1:6379\" (or shared = false to count in each gateway)"));
        }
        if ip.is_none() && payer.is_none() && key.is_none() {
            return None;
        }
        Some(Arc::new(PlanLimits {
            config: c.clone(),
            name: name.to_string(),
            ip: ip.map(Local::new),
            payer: payer.map(Local::new),
            key: key.map(Local::new),
            shared: c.shared,
        }))
    }

    /// Whether the front may answer this plan's unpaid requests itself: an IP limit kept in Redis
    /// needs an await, so those go through the proxy.
    pub fn ip_is_local(&self) -> bool {
        self.ip.is_none() || !self.shared
    }

    /// Checks a client address against the tenant's (`tenant` a stable number for it) IP limit in
    /// this process, without I/O. Only for plans whose IP limit is local ([`Self::ip_is_local`]).
    pub fn check_ip_local(&self, tenant: u64, ip: IpAddr) -> Result<(), Decision> {
        match &self.ip {
            Some(l) => l.check(Scope::Ip, &(tenant, ip)).inspect_err(count),
            None => Ok(()),
        }
    }

    /// Checks one request against the limit of `scope`, for tenant `tenant`: `who` is the client
    /// address, the payer or the key id.
    pub async fn check(&self, scope: Scope, tenant: &str, who: &str) -> Result<(), Decision> {
        let limit = match scope {
            Scope::Ip => self.ip.as_ref().map(|l| l.limit),
            Scope::Payer => self.payer.as_ref().map(|l| l.limit),
            Scope::Key => self.key.as_ref().map(|l| l.limit),
        };
        let Some(limit) = limit else {
            return Ok(());
        };
        if self.shared {
            if let Some(redis) = shared_store() {
                if let Some(answer) = redis.check(scope, limit, tenant, who).await {
                    return answer.inspect_err(count);
                }
            }
        }
        let here = match (scope, &self.ip, &self.payer, &self.key) {
            (Scope::Ip, Some(l), _, _) => {
                let ip = who.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
                l.check(scope, &(tenant_number(tenant), ip))
            }
            (Scope::Payer, _, Some(l), _) => l.check(scope, &format!("{tenant}|{}", who.to_ascii_lowercase())),
            (Scope::Key, _, _, Some(l)) => l.check(scope, &format!("{tenant}|{who}")),
            _ => Ok(()),
        };
        here.inspect_err(count)
    }

    /// Drops the buckets of clients idle long enough to be full again (bounded memory).
    pub fn forget_idle(&self) {
        if let Some(l) = &self.ip {
            l.forget_idle();
        }
        if let Some(l) = &self.payer {
            l.forget_idle();
        }
        if let Some(l) = &self.key {
            l.forget_idle();
        }
    }
}

fn count(d: &Decision) {
    let m = &crate::metrics::METRICS;
    if m.enabled() {
        m.rate_limited.with_label_values(&[d.scope.as_str()]).inc();
    }
}

/// A stable number for a tenant id, to key IP buckets without an allocation per request.
pub fn tenant_number(id: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

// ---------------------------------------------------------------------------------------------
// Shared buckets (Redis).

/// GCRA on Redis's clock, in microseconds. KEYS[1] the bucket; ARGV[1] the interval between
/// tokens, ARGV[2] the burst. Returns {allowed, remaining, retry_after_us, reset_us}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local window = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + interval
local allow_at = next_tat - window
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil((next_tat - now) / 1000))
return {1, math.floor((window - (next_tat - now)) / interval), 0, next_tat - now}
"#;

/// Redis, for plans with `shared = true`.
pub struct Shared {
    manager: redis::aio::ConnectionManager,
    script: redis::Script,
    /// The core runtime: every call runs there, on the connection it owns.
    runtime: tokio::runtime::Handle,
    prefix: String,
    last_warned: std::sync::Mutex<Option<std::time::Instant>>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared_store() -> Option<&'static Shared> {
    SHARED.get()
}

/// Connects (lazily: a Redis that is down at start is retried at each check) to the Redis of
/// `[rate_limits] redis_url`. Call once, inside the core runtime.
pub fn connect(url: &str, prefix: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| format!("rate_limits.redis_url: {e}"))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(250)))
        .set_number_of_retries(1);
    let manager = redis::aio::ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| format!("rate_limits.redis_url: {e}"))?;
    let _ = SHARED.set(Shared {
        manager,
        script: redis::Script::new(GCRA),
        runtime: tokio::runtime::Handle::current(),
        prefix: prefix.to_string(),
        last_warned: std::sync::Mutex::new(None),
    });
    Ok(())
}

impl Shared {
    /// The shared bucket's answer; `None` when Redis did not give one (the caller counts locally).
    async fn check(&self, scope: Scope, limit: Limit, tenant: &str, who: &str) -> Option<Result<(), Decision>> {
        let key = format!(
            "{}:rl:{}:{}:{}:{}",
            self.prefix,
            scope.as_str(),
            tenant,
            limit.count,
            who.to_ascii_lowercase()
        );
        let interval_us = (limit.interval().as_micros() as u64).max(1);
        let (mut conn, script) = (self.manager.clone(), self.script.clone());
        let call = async move {
            let mut inv = script.key(key);
            inv.arg(interval_us).arg(limit.count);
            tokio::time::timeout(
                Duration::from_millis(300),
                inv.invoke_async::<(i64, i64, i64, i64)>(&mut conn),
            )
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        };
        let answer = match self.runtime.spawn(call).await {
            Ok(a) => a,
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok((1, _, _, _)) => Some(Ok(())),
            Ok((_, remaining, retry_us, reset_us)) => Some(Err(Decision {
                scope,
                limit,
                remaining: remaining.max(0) as u32,
                retry_after_secs: ceil_secs(Duration::from_micros(retry_us.max(0) as u64)).max(1),
                reset_secs: ceil_secs(Duration::from_micros(reset_us.max(0) as u64)),
            })),
            Err(e) => {
                let mut last = self.last_warned.lock().expect("not poisoned");
                if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "rate limits: Redis did not answer; counting in this gateway alone until it does");
                    *last = Some(std::time::Instant::now());
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_bad_ones_are_named() {
        assert_eq!(
            Limit::parse("100/s").unwrap(),
            Limit {
                count: 100,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(Limit::parse(" 600 / min ").unwrap().per, Duration::from_secs(60));
        assert_eq!(Limit::parse("5_000/h").unwrap().count, 5_000);
        for bad in ["100", "ten/s", "10/week", "0/s", "-1/s", ""] {
            let e = Limit::parse(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn a_local_bucket_lets_the_burst_through_then_refuses_with_headers() {
        let mut problems = vec![];
        let c = RateLimitsConfig {
            per_ip: Some("3/min".into()),
            ..Default::default()
        };
        let p = PlanLimits::build("rate_limits", "drop-in", &c, None, &mut problems).unwrap();
        assert!(problems.is_empty());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..3 {
            p.check_ip_local(1, ip).unwrap();
        }
        let d = p.check_ip_local(1, ip).unwrap_err();
        assert_eq!((d.scope, d.limit.count, d.remaining), (Scope::Ip, 3, 0));
        // One token every 20 s: the next comes within 20 s, the bucket is full within 60 s.
        assert!((1..=20).contains(&d.retry_after_secs), "{d:?}");
        assert!((41..=60).contains(&d.reset_secs), "{d:?}");
        let h = d.headers();
        assert_eq!(h[1], ("ratelimit-limit", "3".to_string()));
        assert_eq!(h[4], ("ratelimit-policy", "3;w=60".to_string()));
        // Other addresses and other tenants have their own buckets.
        p.check_ip_local(1, "192.0.2.8".parse().unwrap()).unwrap();
        p.check_ip_local(2, ip).unwrap();
        let mut out = vec![];
        d.wire(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{text}");
        assert!(text.contains("retry-after: ") && text.ends_with("\"}"), "{text}");
        assert!(
            text.contains("more than 3 requests from this address per minute"),
            "{text}"
        );
    }

    #[test]
    fn a_shared_plan_needs_redis_and_bad_rates_are_named() {
        let mut problems = vec![];
        let c = RateLimitsConfig {
            per_payer: Some("10/fortnight".into()),
            per_key: Some("5/s".into()),
            shared: true,
            ..Default::default()
        };
        assert!(PlanLimits::build("plans.free.rate_limits", "free", &c, None, &mut problems).is_some());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("plans.free.rate_limits.per_payer: '10/fortnight'"));
        assert!(problems[1].contains("redis_url"));
        assert!(PlanLimits::build("rate_limits", "x", &RateLimitsConfig::default(), None, &mut vec![]).is_none());
    }
}
