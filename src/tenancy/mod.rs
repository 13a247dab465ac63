//! Hosted mode's tenancy: plans and their chain allow-lists, API keys, building a tenant's paywall
//! from its stored settings, and the guard on where a tenant's upstream may point.

pub mod build;
pub mod keys;
pub mod ops;
pub mod ssrf;

use std::collections::BTreeMap;

use std::sync::Arc;

use crate::config::{NetworkSettings, PlanConfig};
use crate::ratelimit::{PlanLimits, RateLimitsConfig};

/// Networks enabled on every plan and not counted among its chains.
pub const TEST_NETWORKS: &[&str] = &["base-sepolia", "solana-devnet"];

/// One plan: a monthly allowance and the chains it enables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    /// Verifications a month; -1 for unlimited.
    pub verifications: i64,
    /// Chain names (`base`, `solana`, …); `*` for every configured one.
    pub chains: Vec<String>,
    pub price_usd: u64,
    /// Gas units the operator's relayer may spend settling one tenant's payments a month (-1:
    /// unlimited). Payments are refused (429) once it is reached, until the month turns.
    pub gas_per_month: i64,
    /// Its rate limits (`[plans.NAME.rate_limits]`, else `[rate_limits]`); `None`: unlimited.
    pub limits: Option<Arc<PlanLimits>>,
}

impl Plan {
    /// Whether payments on this network (by v1 name) are allowed.
    pub fn allows(&self, network: &str) -> bool {
        TEST_NETWORKS.contains(&network) || self.chains.iter().any(|c| c == "*" || c == network)
    }

    /// The configured networks this plan enables, in configuration order.
    pub fn enabled<'n>(&self, configured: &'n [NetworkSettings]) -> Vec<&'n NetworkSettings> {
        configured.iter().filter(|n| self.allows(&n.network.name)).collect()
    }

    /// The chain names the plan enables that this service runs (`enabled_chains` in the API).
    pub fn enabled_names(&self, configured: &[NetworkSettings]) -> Vec<String> {
        self.enabled(configured)
            .iter()
            .map(|n| n.network.name.clone())
            .collect()
    }
}

/// The service's plans, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans(BTreeMap<String, Plan>);

/// A plan's default settlement gas a month: 150k per verification of its allowance (a batched
/// settlement uses about 58k, a lone one 86k, a lone one to a payee's first USDC about 105k), and
/// 500 billion (some 5 million lone settlements) for an unlimited allowance, so that no plan leaves
/// the relayer unbounded by default.
pub fn default_gas(verifications: i64) -> i64 {
    if verifications < 0 {
        500_000_000_000
    } else {
        verifications.saturating_mul(150_000)
    }
}

impl Plans {
    /// SAAS.md's defaults. `pro`'s sixth chain is `sei`, as the contract lists (offered only when
    /// the operator configures it).
    pub fn defaults() -> Plans {
        Plans::defaults_limited(|_| None)
    }

    /// The defaults, each with the limits `limits` gives it.
    fn defaults_limited(limits: impl Fn(&str) -> Option<Arc<PlanLimits>>) -> Plans {
        let p = |name: &str, verifications: i64, chains: &[&str], price_usd: u64| Plan {
            name: name.into(),
            verifications,
            chains: chains.iter().map(|c| c.to_string()).collect(),
            price_usd,
            gas_per_month: default_gas(verifications),
            limits: limits(name),
        };
        Plans(
            [
                p("free", 1_000, &["solana", "base"], 0),
                p("starter", 50_000, &["solana", "base", "ethereum"], 99),
                p(
                    "pro",
                    500_000,
                    &["solana", "base", "ethereum", "polygon", "avalanche", "sei"],
                    299,
                ),
                p("enterprise", -1, &["*"], 999),
            ]
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect(),
        )
    }

    /// The `[plans.*]` tables, or the defaults when there are none; a plan without its own
    /// `rate_limits` has the top-level `[rate_limits]`.
    pub fn from_config(
        cfg: &BTreeMap<String, PlanConfig>,
        top: &RateLimitsConfig,
        problems: &mut Vec<String>,
    ) -> Plans {
        let redis = top.redis_url.as_deref();
        let mut top_problems = Vec::new();
        let shared_default = PlanLimits::build("rate_limits", "default", top, redis, &mut top_problems);
        let limits_of = |name: &str, own: Option<&RateLimitsConfig>, problems: &mut Vec<String>| match own {
            Some(c) => {
                if c.redis_url.is_some() || c.redis_prefix.is_some() {
                    problems.push(format!("plans.{name}.rate_limits: redis_url and redis_prefix are set once, in [rate_limits], not per plan"));
                }
                PlanLimits::build(&format!("plans.{name}.rate_limits"), name, c, redis, problems)
            }
            None => shared_default.clone(),
        };
        if cfg.is_empty() {
            return Plans::defaults_limited(|name| limits_of(name, None, &mut Vec::new()));
        }
        let mut plans = BTreeMap::new();
        for (name, c) in cfg {
            if c.verifications < -1 {
                problems.push(format!(
                    "plans.{name}.verifications: {} is not a count; give a number of verifications a month, or -1 for unlimited",
                    c.verifications
                ));
            }
            if c.gas_per_month.is_some_and(|g| g < -1) {
                problems.push(format!(
                    "plans.{name}.gas_per_month: {} is not an amount of gas; give the gas units the operator's relayer may spend settling this plan's payments a month, or -1 for unlimited",
                    c.gas_per_month.unwrap_or_default()
                ));
            }
            if c.chains.is_empty() {
                problems.push(format!(
                    "plans.{name}.chains: empty; list chains like [\"base\", \"solana\"], or [\"*\"] for all"
                ));
            }
            plans.insert(
                name.clone(),
                Plan {
                    name: name.clone(),
                    verifications: c.verifications,
                    chains: c.chains.clone(),
                    price_usd: c.price_usd,
                    gas_per_month: c.gas_per_month.unwrap_or(default_gas(c.verifications)),
                    limits: limits_of(name, c.rate_limits.as_ref(), problems),
                },
            );
        }
        Plans(plans)
    }

    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.0.get(name)
    }

    /// Keeps `old`'s rate-limit buckets for each plan whose limits did not change (a reload
    /// does not hand every client a fresh burst).
    pub fn keep_buckets_of(&mut self, old: &Plans) {
        for (name, plan) in self.0.iter_mut() {
            if let (Some(new), Some(kept)) = (&plan.limits, old.get(name).and_then(|p| p.limits.as_ref())) {
                if new == kept {
                    plan.limits = Some(kept.clone());
                }
            }
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Plan> {
        self.0.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plans_follow_the_contract() {
        let p = Plans::defaults();
        assert_eq!(p.names(), vec!["enterprise", "free", "pro", "starter"]);
        let free = p.get("free").unwrap();
        assert_eq!(free.verifications, 1000);
        assert!(free.allows("base") && free.allows("solana") && free.allows("base-sepolia"));
        assert!(!free.allows("ethereum") && !free.allows("polygon"));
        assert!(p.get("starter").unwrap().allows("ethereum"));
        assert!(p.get("pro").unwrap().allows("avalanche"));
        assert!(p.get("enterprise").unwrap().allows("anything-configured"));
        assert_eq!(p.get("enterprise").unwrap().verifications, -1);
    }
}
