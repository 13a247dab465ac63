//! One builder for a hosted tenant's paywall, from its stored settings: the same route specs and
//! the same route builder as the drop-in file, with the plan's chain allow-list applied, so a 402
//! never offers a chain the plan does not include.

use alloy::primitives::Address;

use crate::config::{build_routes, RouteConfig, Settings};
use crate::store::TenantRow;
use crate::tenant::{Hosting, Tenant, Upstream, UpstreamUrl};

/// Why a stored tenant cannot serve requests yet (said to its clients as a 503, to it through the API).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotReady {
    #[error("tenant '{0}' has not set its upstream yet; set it with PATCH /api/v1/x402/tenant")]
    NoUpstream(String),
    #[error("tenant '{slug}': {why}")]
    Invalid { slug: String, why: String },
}

/// Parses stored or submitted route specs (a JSON array of the `[[routes]]` shape).
pub fn parse_routes(json: &str) -> Result<Vec<RouteConfig>, String> {
    serde_json::from_str(json)
        .map_err(|e| format!("routes: {e}; give an array like [{{\"path\": \"/api/*\", \"price\": \"$0.01\"}}]"))
}

/// Builds a tenant's paywall from its row: plan, routes, payTo, upstream (resolved now, and
/// refused when it points inside the operator's network unless the operator allows it).
pub async fn tenant(row: &TenantRow, settings: &Settings) -> Result<Tenant, NotReady> {
    let invalid = |why: String| NotReady::Invalid {
        slug: row.slug.clone(),
        why,
    };
    let hosted = settings.hosted.as_ref();
    let plan = settings
        .plans
        .get(&row.plan)
        .ok_or_else(|| {
            invalid(format!(
                "plan '{}' is not one of {:?}",
                row.plan,
                settings.plans.names()
            ))
        })?
        .clone();
    let upstream = row
        .upstream
        .as_deref()
        .ok_or_else(|| NotReady::NoUpstream(row.slug.clone()))?;
    let upstream = resolve(upstream, hosted.is_some_and(|h| h.allow_private_upstreams))
        .await
        .map_err(invalid)?;
    let pay_to: Option<Address> = row.pay_to_evm.as_deref().and_then(|a| a.parse().ok());
    let payees = crate::config::PayTo {
        evm: pay_to,
        solana: row.pay_to_solana.clone(),
    };
    let networks: Vec<_> = plan.enabled(&settings.networks).into_iter().cloned().collect();
    let specs = parse_routes(&row.routes).map_err(invalid)?;
    let mut problems = Vec::new();
    let (routes, table, lower) = build_routes(specs, None, &networks, &payees, &settings.rules, true, &mut problems);
    if !problems.is_empty() {
        return Err(invalid(problems.join("; ")));
    }
    Ok(Tenant {
        id: row.id.clone(),
        pay_to: pay_to.unwrap_or(Address::ZERO),
        pay_to_solana: row.pay_to_solana.clone(),
        upstream,
        routes,
        table,
        lower,
        rules: settings.rules.clone(),
        number: crate::ratelimit::tenant_number(&row.id),
        limits: plan.limits.clone(),
        hosted: Some(Hosting {
            slug: row.slug.clone(),
            plan,
            active: row.active(),
        }),
    })
}

/// Resolves an upstream URL without blocking, checking every address it resolves to.
pub async fn resolve(url: &str, allow_private: bool) -> Result<Upstream, String> {
    let u = UpstreamUrl::parse(url).map_err(|e| format!("upstream: {e}"))?;
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((u.bare_host(), u.port))
        .await
        .map_err(|e| format!("upstream: cannot resolve {}: {e}", u.host))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| format!("upstream: {} resolves to no address", u.host))?;
    if !allow_private {
        super::ssrf::check(url, &addrs)?;
    }
    Ok(u.at(first, false))
}
