//! A tenant: who gets paid, for which routes, in front of which upstream.
//!
//! The drop-in config describes exactly one tenant; hosted mode will load many from the database into
//! these same structures.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use alloy::primitives::Address;
use serde::Deserialize;

use crate::reading::{Reading, Rules};
use crate::routes::{MethodMatch, RouteTable};
use crate::x402::{AmountMatch, Offer};

/// When the payment is settled relative to forwarding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SettleTiming {
    /// Settle on chain, then forward: the upstream only ever sees paid requests.
    #[default]
    Before,
    /// Verify, forward, and settle only if the upstream answered < 400; otherwise charge nothing.
    After,
}

impl SettleTiming {
    pub fn as_str(self) -> &'static str {
        match self {
            SettleTiming::Before => "before",
            SettleTiming::After => "after",
        }
    }
}

/// When a paid request is answered relative to its settlement (`answer` on a route).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnswerWhen {
    /// Once the transfer is in a block (its receipt): no risk, about one block of latency.
    #[default]
    Confirmed,
    /// Once the node accepted the transaction carrying the transfer; it may still fail in the block.
    Submitted,
    /// Once the offline checks and the on-chain simulation passed and the claim is in the ledger;
    /// the transfer follows in the next batch. The payer could move its funds first: bounded by
    /// `settlement.max_unsettled_per_payer` and `max_unsettled_total`.
    Verified,
}

impl AnswerWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerWhen::Confirmed => "confirmed",
            AnswerWhen::Submitted => "submitted",
            AnswerWhen::Verified => "verified",
        }
    }
}

/// What a priced route costs and how it is paid.
#[derive(Debug, Clone)]
pub struct Pricing {
    /// One offer per accepted network, in the order they are advertised.
    pub offers: Vec<Offer>,
    pub description: String,
    pub mime_type: String,
    pub settle: SettleTiming,
    /// When the paid request is answered: after the receipt (default), the send, or the checks.
    pub answer: AnswerWhen,
    pub amount: AmountMatch,
    /// The payment-identifier extension on this route.
    pub payment_id: crate::x402::identifier::IdPolicy,
}

impl Pricing {
    /// The price on a common scale (18 decimals), to find the dearest of several routes.
    pub fn rank(&self) -> alloy::primitives::U256 {
        self.offers.first().map_or(alloy::primitives::U256::ZERO, |o| {
            o.amount
                * alloy::primitives::U256::from(10u64)
                    .pow(alloy::primitives::U256::from(18 - o.network.decimals.min(18)))
        })
    }

    /// The offer for the network a client named (by v1 name or CAIP-2 id).
    pub fn offer_for(&self, network: &str) -> Option<&Offer> {
        self.offers.iter().find(|o| o.network.is_named(network))
    }
}

/// One configured route; `pricing` is `None` for a free route.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: MethodMatch,
    pub pattern: String,
    pub pricing: Option<Arc<Pricing>>,
    /// `discoverable` of its spec: `Some(true)` published in the catalog, `Some(false)` hidden
    /// from `/.well-known/x402` too.
    pub discoverable: Option<bool>,
    /// A short name for records and metrics: `GET /api/*` (made once, at load).
    pub label: String,
    /// Its `tollgate_requests_total{outcome="challenged"}` series, resolved on the first 402 the
    /// front answers (so that the 402 path counts with one atomic add, no label lookups).
    pub challenged: std::sync::OnceLock<prometheus::IntCounter>,
}

impl Route {
    pub fn new(
        method: MethodMatch,
        pattern: String,
        pricing: Option<Arc<Pricing>>,
        discoverable: Option<bool>,
    ) -> Route {
        let label = match &method {
            MethodMatch::Any => format!("* {pattern}"),
            MethodMatch::Only(m) => format!("{m} {pattern}"),
        };
        Route {
            method,
            pattern,
            pricing,
            discoverable,
            label,
            challenged: std::sync::OnceLock::new(),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

/// The API behind the paywall.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub tls: bool,
    /// Host name for SNI and the Host header.
    pub host: String,
    /// `host[:port]` as the Host header should carry it.
    pub authority: String,
    /// The same, as the header value sent on every forwarded request (shared, not copied).
    pub host_header: http::HeaderValue,
    /// A path the upstream URL carried (`http://api/v1` → `/v1`), prefixed to forwarded paths.
    pub path_prefix: String,
    pub preserve_host: bool,
}

/// An upstream URL, parsed but not resolved.
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub authority: String,
    pub path_prefix: String,
}

impl UpstreamUrl {
    /// Parses `http(s)://host[:port][/prefix]`.
    pub fn parse(s: &str) -> Result<UpstreamUrl, String> {
        let u = url::Url::parse(s).map_err(|e| format!("'{s}' is not a URL like 'http://127.0.0.1:8080' ({e})"))?;
        let tls = match u.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(format!("'{s}': scheme '{other}' is not http or https")),
        };
        if !u.username().is_empty() || u.password().is_some() || u.query().is_some() || u.fragment().is_some() {
            return Err(format!(
                "'{s}': an upstream URL has no user, password, query or fragment; give 'http(s)://host[:port][/path]'"
            ));
        }
        let host = u.host_str().ok_or_else(|| format!("'{s}' names no host"))?.to_string();
        let port = u.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        let authority = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let path_prefix = u.path().trim_end_matches('/').to_string();
        Ok(UpstreamUrl {
            tls,
            host,
            port,
            authority,
            path_prefix,
        })
    }

    /// The host without IPv6 brackets, for resolving.
    pub fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The upstream at one resolved address.
    pub fn at(self, addr: SocketAddr, preserve_host: bool) -> Upstream {
        let host_header = http::HeaderValue::from_maybe_shared(bytes::Bytes::from(self.authority.clone()))
            .unwrap_or(http::HeaderValue::from_static("localhost"));
        Upstream {
            addr,
            tls: self.tls,
            host: self.host,
            host_header,
            authority: self.authority,
            path_prefix: self.path_prefix,
            preserve_host,
        }
    }
}

impl Upstream {
    /// Parses `http(s)://host[:port][/prefix]` and resolves the host once (blocking: at load).
    pub fn parse(s: &str, preserve_host: bool) -> Result<Upstream, String> {
        let u = UpstreamUrl::parse(s)?;
        let addr = (u.bare_host(), u.port)
            .to_socket_addrs()
            .map_err(|e| format!("'{s}': cannot resolve {}: {e}", u.host))?
            .next()
            .ok_or_else(|| format!("'{s}': {} resolves to no address", u.host))?;
        Ok(u.at(addr, preserve_host))
    }
}

/// A tenant's whole paywall.
#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    /// The EVM payee (the zero address when the tenant has none).
    pub pay_to: Address,
    /// The Solana payee (a wallet), when the tenant has one.
    pub pay_to_solana: Option<String>,
    pub upstream: Upstream,
    pub routes: Vec<Route>,
    pub table: RouteTable,
    /// The same routes with lower-case patterns, when the upstream may ignore letter case.
    pub lower: Option<RouteTable>,
    /// How requests to this upstream are read.
    pub rules: Rules,
    /// Hosted mode: the tenant's name, plan and standing; `None` for the drop-in tenant.
    pub hosted: Option<Hosting>,
    /// Its id as a number, to key its rate-limit buckets ([`crate::ratelimit::tenant_number`]).
    pub number: u64,
    /// Its rate limits (the drop-in `[rate_limits]`, or its plan's).
    pub limits: Option<Arc<crate::ratelimit::PlanLimits>>,
    /// Its `tollgate_requests_total{route="none",outcome="free"}` series, resolved on the first
    /// request the front forwards (one atomic add per request after that).
    pub served_free: std::sync::OnceLock<prometheus::IntCounter>,
}

/// Who a payment is for, as the pipeline needs it: the tenant's id, and its monthly allowance when it
/// is metered (`-1`: unlimited but counted).
#[derive(Debug, Clone, Copy)]
pub struct Account<'a> {
    pub id: &'a str,
    pub quota: Option<i64>,
    /// Gas a month for its settlements (-1: unlimited); only with a quota (a metered tenant).
    pub gas_budget: i64,
    /// Its rate limits (the per-payer one applies here).
    pub limits: Option<&'a crate::ratelimit::PlanLimits>,
}

impl Tenant {
    pub fn account(&self) -> Account<'_> {
        Account {
            id: &self.id,
            quota: self.hosted.as_ref().map(|h| h.plan.verifications),
            gas_budget: self.hosted.as_ref().map_or(-1, |h| h.plan.gas_per_month),
            limits: self.limits.as_deref(),
        }
    }
}

/// What a hosted tenant is besides its paywall.
#[derive(Debug, Clone)]
pub struct Hosting {
    pub slug: String,
    pub plan: crate::tenancy::Plan,
    /// `false` while suspended: priced routes refuse, nothing is forwarded unpaid.
    pub active: bool,
}

impl Tenant {
    /// The route a request falls under: the dearest priced route that any reading of it (paths an
    /// upstream could read, methods it could run) matches, else the plain reading's free route.
    /// Charging the dearest is what makes every reading paid for.
    pub fn route_for(&self, r: &Reading) -> Option<(usize, &Route)> {
        let mut plain: Option<usize> = None;
        let mut dearest: Option<(usize, alloy::primitives::U256)> = None;
        let mut first = true;
        for m in r.methods() {
            r.each_path(&self.rules, |path, lowered| {
                let table = if lowered {
                    self.lower.as_ref()
                } else {
                    Some(&self.table)
                };
                let found = table.and_then(|t| t.find(m, path));
                if std::mem::take(&mut first) {
                    plain = found;
                }
                if let Some(i) = found {
                    if let Some(p) = &self.routes[i].pricing {
                        let rank = p.rank();
                        if dearest.is_none_or(|(_, best)| rank > best) {
                            dearest = Some((i, rank));
                        }
                    }
                }
                false
            });
        }
        dearest.map(|(i, _)| i).or(plain).map(|i| (i, &self.routes[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let u = Upstream::parse("http://127.0.0.1:8080/v1/", false).unwrap();
        assert_eq!(u.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            (u.tls, u.path_prefix.as_str(), u.authority.as_str()),
            (false, "/v1", "127.0.0.1:8080")
        );
        let u = Upstream::parse("https://localhost", false).unwrap();
        assert_eq!(
            (u.tls, u.addr.port(), u.authority.as_str(), u.path_prefix.as_str()),
            (true, 443, "localhost", "")
        );
        assert!(Upstream::parse("ftp://x", false)
            .unwrap_err()
            .contains("not http or https"));
        assert!(Upstream::parse("nope", false).unwrap_err().contains("is not a URL"));
    }
}
