//! Prometheus metrics: one process-wide registry, counted where requests and payments end, served on
//! the metrics listener (`[metrics] listen`, default 127.0.0.1:9402) with the health checks.
//!
//! Names follow Prometheus conventions (`tollgate_` prefix, `_total` counters, `_seconds`, base
//! units). Tenant and route labels are capped ([`LabelCap`]): past the cap a new value is counted as
//! `other`, so that a million tenants cannot grow the registry without bound.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, RwLock};

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::store::{Attempt, Outcome};

/// Most distinct tenant labels, and route labels, kept; the rest are `other`.
pub const TENANT_LABELS: usize = 1_000;
pub const ROUTE_LABELS: usize = 2_000;

/// Admits label values up to a cap; later ones read as `other`.
pub struct LabelCap {
    seen: RwLock<HashSet<String>>,
    cap: usize,
}

impl LabelCap {
    pub fn new(cap: usize) -> LabelCap {
        LabelCap {
            seen: RwLock::new(HashSet::new()),
            cap,
        }
    }

    /// `value` itself while it is admitted (or there is room), `other` otherwise.
    pub fn get<'a>(&self, value: &'a str) -> &'a str {
        {
            let r = self.seen.read().expect("label set");
            if r.contains(value) {
                return value;
            }
            // Full: past the cap every new value is `other` under the read lock alone (a write
            // lock per request would serialise a gateway with more tenants than the cap).
            if r.len() >= self.cap {
                return "other";
            }
        }
        let mut w = self.seen.write().expect("label set");
        if w.contains(value) || w.len() < self.cap {
            w.insert(value.to_string());
            value
        } else {
            "other"
        }
    }
}

/// Every series tollgate exports.
pub struct Metrics {
    pub registry: Registry,
    /// Requests by tenant, route and outcome (`challenged`, `paid`, `free`, `refused`, `pending`,
    /// `over_quota`, `rate_limited`, `unavailable`, `upstream_failed`, `other`).
    pub requests: IntCounterVec,
    /// Payment attempts by network and outcome (the ledger's: settled, pending, rejected, …).
    pub payments: IntCounterVec,
    /// Atomic units of USDC settled, by network.
    pub settled_atomic: IntCounterVec,
    /// Refused replays: `duplicate` (the same authorization again).
    pub replays: IntCounterVec,
    pub verify_seconds: HistogramVec,
    pub settle_seconds: HistogramVec,
    /// The signer's (relayer's, fee payer's) balance in the chain's base unit (wei, lamports).
    pub signer_balance: IntGaugeVec,
    /// Ledger rows by state.
    pub ledger_rows: IntGaugeVec,
    /// Requests refused by a rate limit, by what it is kept on (`ip`, `payer`, `key`).
    pub rate_limited: IntCounterVec,
    /// The upstream's time to answer (request sent → response head), proxied requests.
    pub upstream_seconds: prometheus::Histogram,
    /// Chain RPC calls that failed (no answer, an error), by network.
    pub rpc_errors: IntCounterVec,
    /// Chain RPC latency by network, probed at each reconciliation pass.
    pub rpc_seconds: HistogramVec,
    /// The relayer's transactions sent and not yet mined, by network.
    pub relayer_pending: IntGaugeVec,
    /// Per settled payment: how many payments its transaction carried, and its share of the gas.
    pub batch_size: HistogramVec,
    pub gas_per_payment: HistogramVec,
    /// Money answered before its settlement and not settled yet (USD), by network.
    pub unsettled_exposure: prometheus::GaugeVec,
    /// Payments answered before their settlement, by network and what became of them.
    pub answered_early: IntCounterVec,
    /// Hosted tenants' verifications this month, and their plan's allowance (-1: unlimited).
    pub quota_used: IntGaugeVec,
    pub quota_limit: IntGaugeVec,
    /// Cache lookups by cache (`tenants`, `keys`) and result (`hit`, `miss`).
    pub cache: IntCounterVec,
    pub tenant_cache_hit: prometheus::IntCounter,
    pub tenant_cache_miss: prometheus::IntCounter,
    pub key_cache_hit: prometheus::IntCounter,
    pub key_cache_miss: prometheus::IntCounter,
    tenants: LabelCap,
    routes: LabelCap,
    /// Off (`[metrics] enabled = false`): nothing is counted.
    on: AtomicBool,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let fast = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
        let slow = vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];
        let cache = counter(
            &r,
            "tollgate_cache_requests_total",
            "Cache lookups by cache (tenants: hosted tenants' built paywalls; keys: API keys) and result (hit, miss).",
            &["cache", "result"],
        );
        Metrics {
            requests: counter(
                &r,
                "tollgate_requests_total",
                "Requests by tenant, route and outcome.",
                &["tenant", "route", "outcome"],
            ),
            payments: counter(
                &r,
                "tollgate_payments_total",
                "Payment attempts by network, scheme and outcome.",
                &["network", "scheme", "outcome"],
            ),
            settled_atomic: counter(
                &r,
                "tollgate_settled_atomic_units_total",
                "USDC settled, in atomic units (6 decimals), by tenant and network.",
                &["tenant", "network"],
            ),
            replays: counter(
                &r,
                "tollgate_replays_refused_total",
                "Payments refused as replays or duplicate settlements, by network.",
                &["network"],
            ),
            verify_seconds: histogram(
                &r,
                "tollgate_verify_seconds",
                "Payment verification (offline checks, claim, on-chain check), by network.",
                &["network"],
                fast,
            ),
            settle_seconds: histogram(
                &r,
                "tollgate_settle_seconds",
                "Settlement (send and confirm), by network.",
                &["network"],
                slow,
            ),
            signer_balance: gauge(
                &r,
                "tollgate_signer_balance",
                "The relayer's or fee payer's native balance in the chain's base unit (wei, lamports), by network.",
                &["network"],
            ),
            ledger_rows: gauge(
                &r,
                "tollgate_ledger_rows",
                "Ledger rows by state (claimed, pending, settled, failed, lost).",
                &["state"],
            ),
            rate_limited: counter(
                &r,
                "tollgate_rate_limited_total",
                "Requests refused 429 by a rate limit, by scope (ip, payer, key).",
                &["scope"],
            ),
            upstream_seconds: {
                let h = prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "tollgate_upstream_seconds",
                        "The upstream's time to answer a proxied request (request sent to response head).",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                    ]),
                )
                .expect("metric");
                r.register(Box::new(h.clone())).expect("registered once");
                h
            },
            rpc_errors: counter(
                &r,
                "tollgate_chain_rpc_errors_total",
                "Chain RPC calls that failed, by network.",
                &["network"],
            ),
            rpc_seconds: histogram(
                &r,
                "tollgate_chain_rpc_seconds",
                "Chain RPC latency, probed at each reconciliation pass, by network.",
                &["network"],
                vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            ),
            relayer_pending: gauge(
                &r,
                "tollgate_relayer_pending_transactions",
                "The relayer's transactions the node holds but has not mined (pending nonces), by network.",
                &["network"],
            ),
            batch_size: histogram(
                &r,
                "tollgate_settlement_batch_size",
                "Per settled payment (relayer): how many payments its transaction carried, by network.",
                &["network"],
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 64.0],
            ),
            gas_per_payment: histogram(
                &r,
                "tollgate_settlement_gas_per_payment",
                "Per settled payment (relayer): its share of the transaction's gas, by network.",
                &["network"],
                vec![
                    30_000.0, 40_000.0, 50_000.0, 60_000.0, 70_000.0, 85_000.0, 100_000.0, 150_000.0,
                ],
            ),
            unsettled_exposure: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "tollgate_unsettled_exposure_usd",
                        "Money answered before its settlement (answer = verified | submitted) and not on chain yet, in USD, by network.",
                    ),
                    &["network"],
                )
                .expect("metric");
                r.register(Box::new(g.clone())).expect("registered once");
                g
            },
            answered_early: counter(
                &r,
                "tollgate_answered_early_total",
                "Payments answered before their settlement, by network and outcome (answered; settled; failed: its transfer failed after the answer; collected: a failed one settled later; lost: expired unsettled; over_limit: answered after its receipt instead, an exposure bound being reached).",
                &["network", "outcome"],
            ),
            quota_used: gauge(
                &r,
                "tollgate_quota_used",
                "Hosted tenants' verified payments this month (the 1,000 highest), by tenant.",
                &["tenant"],
            ),
            quota_limit: gauge(
                &r,
                "tollgate_quota_limit",
                "Their plan's monthly allowance (-1: unlimited), by tenant.",
                &["tenant"],
            ),
            cache: cache.clone(),
            tenant_cache_hit: cache.with_label_values(&["tenants", "hit"]),
            tenant_cache_miss: cache.with_label_values(&["tenants", "miss"]),
            key_cache_hit: cache.with_label_values(&["keys", "hit"]),
            key_cache_miss: cache.with_label_values(&["keys", "miss"]),
            registry: r,
            tenants: LabelCap::new(TENANT_LABELS),
            routes: LabelCap::new(ROUTE_LABELS),
            on: AtomicBool::new(true),
        }
    }

    /// Counts USDC settled (atomic units, as the ledger writes them) for a tenant on a network.
    pub fn settled_amount(&self, tenant: &str, network: &str, amount: &str) {
        if let (Ok(n), true) = (amount.parse::<u64>(), self.enabled()) {
            let t = self.tenants.get(tenant);
            self.settled_atomic.with_label_values(&[t, network]).inc_by(n);
        }
    }

    /// Counts a payment answered before its settlement, or what became of it.
    pub fn answered_early(&self, network: &str, outcome: &str) {
        if self.enabled() {
            self.answered_early.with_label_values(&[network, outcome]).inc();
        }
    }

    /// Turns counting on or off (at start, from `[metrics] enabled`).
    pub fn set_enabled(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Counts one request that ended.
    pub fn request(&self, tenant: &str, route: &str, outcome: &str) {
        if self.enabled() {
            self.request_counter(tenant, route, outcome).inc();
        }
    }

    /// The series of one (tenant, route, outcome), for callers that keep it.
    pub fn request_counter(&self, tenant: &str, route: &str, outcome: &str) -> prometheus::IntCounter {
        let t = self.tenants.get(tenant);
        let r = self.routes.get(route);
        self.requests.with_label_values(&[t, r, outcome])
    }

    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Counts one payment attempt from its record (proxy, facilitator and reconciler alike).
    pub fn attempt(&self, a: &Attempt) {
        let Some(outcome) = a.outcome.filter(|_| self.on.load(Ordering::Relaxed)) else {
            return;
        };
        let network = a.network.as_deref().unwrap_or("unknown");
        self.payments
            .with_label_values(&[network, "exact", outcome.as_str()])
            .inc();
        if outcome == Outcome::Duplicate {
            self.replays.with_label_values(&[network]).inc();
        }
        if outcome == Outcome::Settled {
            self.settled_amount(&a.tenant, network, a.amount.as_deref().unwrap_or(""));
        }
        if let Some(us) = a.verify_us {
            self.verify_seconds
                .with_label_values(&[network])
                .observe(us as f64 / 1e6);
        }
        if let Some(us) = a.settle_us {
            self.settle_seconds
                .with_label_values(&[network])
                .observe(us as f64 / 1e6);
        }
    }

    /// The text exposition of every series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("utf-8")
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grafana_dashboard_queries_only_series_tollgate_exports() {
        let m = Metrics::new();
        // A family is exported once it has a series: give each one.
        m.requests.with_label_values(&["t", "r", "paid"]).inc();
        m.payments.with_label_values(&["n", "exact", "settled"]).inc();
        m.settled_atomic.with_label_values(&["t", "n"]).inc();
        m.replays.with_label_values(&["n"]).inc();
        m.verify_seconds.with_label_values(&["n"]).observe(0.1);
        m.settle_seconds.with_label_values(&["n"]).observe(0.1);
        m.signer_balance.with_label_values(&["n"]).set(1);
        m.ledger_rows.with_label_values(&["settled"]).set(1);
        m.rate_limited.with_label_values(&["ip"]).inc();
        m.upstream_seconds.observe(0.01);
        m.rpc_errors.with_label_values(&["n"]).inc();
        m.rpc_seconds.with_label_values(&["n"]).observe(0.01);
        m.quota_used.with_label_values(&["t"]).set(1);
        m.relayer_pending.with_label_values(&["n"]).set(1);
        m.batch_size.with_label_values(&["n"]).observe(1.0);
        m.gas_per_payment.with_label_values(&["n"]).observe(1.0);
        m.quota_limit.with_label_values(&["t"]).set(1);
        m.unsettled_exposure.with_label_values(&["n"]).set(0.5);
        m.answered_early.with_label_values(&["n", "answered"]).inc();
        m.tenant_cache_hit.inc();
        let exported: Vec<String> = m.registry.gather().iter().map(|f| f.name().to_string()).collect();
        let dash: serde_json::Value =
            serde_json::from_str(include_str!("../deploy/grafana/tollgate.json")).expect("the dashboard is JSON");
        let mut queried = 0;
        for panel in dash["panels"].as_array().expect("panels") {
            for t in panel["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                for (i, _) in expr.match_indices("tollgate_") {
                    let name: String = expr[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|x| name.strip_suffix(x))
                        .unwrap_or(&name);
                    assert!(
                        exported.iter().any(|e| e == base),
                        "panel '{}' queries {name}, which tollgate does not export",
                        panel["title"]
                    );
                    queried += 1;
                }
            }
        }
        assert!(queried >= 10, "{queried}");
        // Every series tollgate exports is on the dashboard.
        for e in &exported {
            assert!(dash["panels"].to_string().contains(e.as_str()), "{e} is on no panel");
        }
    }

    #[test]
    fn labels_past_the_cap_are_other() {
        let cap = LabelCap::new(2);
        assert_eq!(cap.get("a"), "a");
        assert_eq!(cap.get("b"), "b");
        assert_eq!(cap.get("c"), "other");
        assert_eq!(cap.get("a"), "a");
    }

    #[test]
    fn attempts_become_series() {
        let m = Metrics::new();
        m.attempt(&Attempt {
            tenant: "t1".into(),
            network: Some("eip155:8453".into()),
            amount: Some("1000".into()),
            outcome: Some(Outcome::Settled),
            verify_us: Some(1500),
            settle_us: Some(20_000),
            ..Default::default()
        });
        m.request("t1", "/paid/*", "paid");
        let text = m.render();
        assert!(
            text.contains(r#"tollgate_payments_total{network="eip155:8453",outcome="settled",scheme="exact"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tollgate_settled_atomic_units_total{network="eip155:8453",tenant="t1"} 1000"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tollgate_requests_total{outcome="paid",route="/paid/*",tenant="t1"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("tollgate_settle_seconds_count{network=\"eip155:8453\"} 1"),
            "{text}"
        );
    }
}
