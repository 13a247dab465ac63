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
/// A problem is named by its element and field: `routes[0].answer: unknown variant `soon`, …`.
pub fn parse_routes(json: &str) -> Result<Vec<RouteConfig>, String> {
    const SHAPE: &str = "give an array like [{\"path\": \"/api/*\", \"price\": \"$0.01\"}]";
    let items: Vec<serde_json::Value> = serde_json::from_str(json).map_err(|e| format!("routes: {e}; {SHAPE}"))?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_value::<RouteConfig>(item.clone()).map_err(|e| {
                // The field at fault: the first that fails on its own beside a plain path.
                let field = item.as_object().and_then(|o| {
                    o.iter().find(|(k, v)| {
                        let mut one = serde_json::Map::new();
                        one.insert("path".into(), "/".into());
                        one.insert(k.to_string(), (*v).clone());
                        serde_json::from_value::<RouteConfig>(one.into()).is_err()
                    })
                });
                match field {
                    Some((k, _)) => format!("routes[{i}].{k}: {e}"),
                    None => format!("routes[{i}]: {e}; {SHAPE}"),
                }
            })
        })
        .collect()
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
        served_free: Default::default(),
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

#[cfg(test)]
mod tests {
    use super::parse_routes;

    #[test]
    fn route_problems_name_the_element_and_field() {
        let ok = parse_routes(r#"[{"path": "/a", "price": "$0.01", "answer": "verified"}]"#).unwrap();
        assert_eq!(ok[0].answer, crate::tenant::AnswerWhen::Verified);
        let e = parse_routes(r#"[{"path": "/a"}, {"path": "/b", "answer": "soon"}]"#).unwrap_err();
        assert!(e.starts_with("routes[1].answer: unknown variant `soon`"), "{e}");
        assert!(e.contains("`verified`"), "{e}");
        let e = parse_routes(r#"[{"path": "/a", "prize": "$1"}]"#).unwrap_err();
        assert!(e.starts_with("routes[0].prize: unknown field `prize`"), "{e}");
        let e = parse_routes(r#"[{"price": "$1"}]"#).unwrap_err();
        assert!(e.starts_with("routes[0]: missing field `path`"), "{e}");
        let e = parse_routes(r#"{"path": "/a"}"#).unwrap_err();
        assert!(e.starts_with("routes: ") && e.contains("give an array like"), "{e}");
    }
}
