//! What a tenant also needs: its keys, its settings (upstream, routes, payTo), its verifications
//! and payments, and a usage breakdown.

use alloy::primitives::Address;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::contract::tenant_json;
use super::{ApiError, Body, State};
use crate::clock::rfc3339;
use crate::store::{KeyRow, Listing, TenantChange};
use crate::tenancy::{build, ops};

fn key_json(k: &KeyRow) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "prefix": format!("{}…", k.prefix),
        "scopes": if k.scopes.is_empty() { vec![] } else { k.scopes.split(',').collect::<Vec<_>>() },
        "created_at": rfc3339(k.created_at / 1000),
        "last_used_at": k.last_used_at.map(|t| rfc3339(t / 1000)),
        "revoked_at": k.revoked_at.map(|t| rfc3339(t / 1000)),
    })
}

/// `GET /keys`.
pub async fn list_keys(axum::extract::State(api): State, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let c = api.caller(&headers, "manage").await?;
    let keys = api
        .app()
        .payments
        .store
        .keys_of(&c.tenant.id)
        .await
        .map_err(ApiError::db)?;
    Ok(Json(
        json!({"success": true, "keys": keys.iter().map(key_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    test: bool,
}

/// `POST /keys`: a new key, shown once.
pub async fn create_key(
    axum::extract::State(api): State,
    headers: HeaderMap,
    Body(b): Body<NewKeyBody>,
) -> Result<impl IntoResponse, ApiError> {
    let c = api.caller(&headers, "manage").await?;
    let (row, key) = ops::create_key(
        &api.app().payments.store,
        &c.tenant.id,
        &b.name,
        &b.scopes,
        !b.test,
        api.now_ms(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"success": true, "key": key_json(&row), "api_key": key})),
    ))
}

/// `DELETE /keys/{id}`: revoked at once on this gateway, within `hosted.key_cache_secs` on others.
pub async fn revoke_key(
    axum::extract::State(api): State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = api.caller(&headers, "manage").await?;
    let hash = api
        .app()
        .payments
        .store
        .revoke_key(&c.tenant.id, &id, api.now_ms())
        .await
        .map_err(ApiError::db)?
        .ok_or_else(|| ApiError::not_found("live key"))?;
    api.keys.forget(&hash).await;
    Ok(Json(json!({"success": true, "revoked": id})))
}

/// `GET /tenant`: the caller's own settings.
pub async fn show_tenant(axum::extract::State(api): State, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let c = api.caller_any(&headers, "manage").await?;
    Ok(Json(json!({"success": true, "tenant": tenant_json(&c.tenant, &api)})))
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PayTo {
    evm: Option<String>,
    solana: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    name: Option<String>,
    upstream: Option<String>,
    pay_to: Option<PayTo>,
    /// The tenant's routes, each a `[[routes]]` table of the drop-in config as JSON (`answer`,
    /// `settle`, `amount`, … as documented there); checked as a whole, every problem named.
    #[schemars(with = "Option<Vec<crate::config::RouteConfig>>")]
    routes: Option<Value>,
}

/// `PATCH /tenant`: upstream, routes, payTo, name. Each is checked as the proxy will use it:
/// the upstream resolved and refused if private, routes built against the plan's chains.
pub async fn update_tenant(
    axum::extract::State(api): State,
    headers: HeaderMap,
    Body(b): Body<TenantPatch>,
) -> Result<Json<Value>, ApiError> {
    let c = api.caller(&headers, "manage").await?;
    let settings = &api.app().settings;
    let mut change = TenantChange::default();
    if let Some(n) = b.name {
        let n = n.trim().to_string();
        if n.is_empty() || n.len() > 200 {
            return Err(ApiError::invalid("name: give 1 to 200 characters"));
        }
        change.name = Some(n);
    }
    if let Some(u) = b.upstream {
        let allow = settings.hosted.as_ref().is_some_and(|h| h.allow_private_upstreams);
        build::resolve(&u, allow).await.map_err(ApiError::invalid)?;
        change.upstream = Some(Some(u.trim_end_matches('/').to_string()));
    }
    if let Some(p) = b.pay_to {
        if let Some(a) = p.evm {
            let addr: Address = a
                .parse()
                .map_err(|_| ApiError::invalid(format!("pay_to.evm: '{a}' is not an EVM address")))?;
            if addr.is_zero() {
                return Err(ApiError::invalid("pay_to.evm: the zero address cannot receive USDC"));
            }
            change.pay_to_evm = Some(Some(addr.to_checksum(None)));
        }
        if let Some(s) = p.solana {
            if !crate::config::is_base58_key(&s) {
                return Err(ApiError::invalid(format!(
                    "pay_to.solana: '{s}' is not a Solana wallet address (base58, 32 bytes)"
                )));
            }
            if s.bytes().all(|b| b == b'1') {
                return Err(ApiError::invalid(
                    "pay_to.solana: the system program cannot receive USDC",
                ));
            }
            change.pay_to_solana = Some(Some(s));
        }
    }
    if let Some(routes) = b.routes {
        let text = routes.to_string();
        let specs = build::parse_routes(&text).map_err(ApiError::invalid)?;
        let plan = settings
            .plans
            .get(&c.tenant.plan)
            .ok_or_else(|| ApiError::invalid(format!("plan '{}' is not defined", c.tenant.plan)))?;
        for (i, r) in specs.iter().enumerate() {
            for (j, n) in r.networks.iter().flatten().enumerate() {
                if !plan.allows(n) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "CHAIN_NOT_ENABLED",
                        format!(
                            "routes[{i}].networks[{j}]: '{n}' is not enabled on the '{}' plan",
                            plan.name
                        ),
                    ));
                }
            }
        }
        let networks: Vec<_> = plan.enabled(&settings.networks).into_iter().cloned().collect();
        let mut problems = Vec::new();
        crate::config::build_routes(
            specs,
            None,
            &networks,
            &crate::config::PayTo::placeholder(),
            &settings.rules,
            false,
            &mut problems,
        );
        if !problems.is_empty() {
            return Err(ApiError::invalid(problems.join("; ")));
        }
        change.routes = Some(text);
    }
    let store = &api.app().payments.store;
    store
        .update_tenant(&c.tenant.id, &change, api.now_ms())
        .await
        .map_err(ApiError::db)?;
    if let Some(h) = api.app().directory.hosted() {
        h.forget(&c.tenant.slug);
    }
    api.settling.invalidate(&c.tenant.id);
    let t = store
        .tenant(&c.tenant.id)
        .await
        .map_err(ApiError::db)?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(Json(json!({"success": true, "tenant": tenant_json(&t, &api)})))
}

/// Query of a listing: `since`/`until` (unix seconds), `chain`, `outcome`, `limit`, `cursor`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    since: Option<i64>,
    until: Option<i64>,
    chain: Option<String>,
    outcome: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

impl ListQuery {
    fn listing(self) -> Result<Listing, ApiError> {
        let after = match self.cursor {
            None => None,
            Some(c) => {
                let (at, id) = c
                    .split_once('.')
                    .and_then(|(a, i)| Some((a.parse::<i64>().ok()?, i.to_string())))
                    .ok_or_else(|| ApiError::invalid("cursor: pass back the next_cursor of the previous page"))?;
                Some((at, id))
            }
        };
        Ok(Listing {
            since_ms: self.since.map(|s| s * 1000),
            until_ms: self.until.map(|s| s * 1000),
            chain: self.chain,
            outcome: self.outcome,
            after,
            limit: self.limit.unwrap_or(50).clamp(1, 500),
        })
    }
}

fn query<T: Default>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))
}

/// `GET /verifications`.
pub async fn verifications(
    axum::extract::State(api): State,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let c = api.caller(&headers, "analytics").await?;
    let listing = query(q)?.listing()?;
    let rows = api
        .app()
        .payments
        .store
        .verifications(&c.tenant.id, &listing)
        .await
        .map_err(ApiError::db)?;
    let next = (rows.len() == listing.limit as usize)
        .then(|| rows.last().map(|r| format!("{}.{}", r.at_ms, r.id)))
        .flatten();
    Ok(Json(
        json!({"success": true, "verifications": rows, "next_cursor": next}),
    ))
}

/// `GET /payments`: the tenant's ledger rows from the proxy.
pub async fn payments(
    axum::extract::State(api): State,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let c = api.caller(&headers, "analytics").await?;
    let mut listing = query(q)?.listing()?;
    // The ledger keys payments by CAIP-2 id; a filter may name the network either way.
    if let Some(n) = listing.chain.as_mut() {
        if let Some(ns) = api.app().settings.networks.iter().find(|ns| ns.network.is_named(n)) {
            *n = ns.network.caip2.clone();
        }
    }
    let rows = api
        .app()
        .payments
        .store
        .payments_of(&c.tenant.id, &listing)
        .await
        .map_err(ApiError::db)?;
    let next = (rows.len() == listing.limit as usize)
        .then(|| rows.last().map(|r| format!("{}.{}", r.claimed_at, r.cursor_id())))
        .flatten();
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "network": r.key.network, "payer": r.key.payer, "amount": r.amount, "route": r.route,
                "state": r.state.as_str(), "tx_hash": r.tx_hash,
                "claimed_at": rfc3339(r.claimed_at as i64 / 1000), "updated_at": rfc3339(r.updated_at as i64 / 1000),
            })
        })
        .collect();
    Ok(Json(json!({"success": true, "payments": list, "next_cursor": next})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BreakdownQuery {
    since: Option<i64>,
}

/// `GET /usage/breakdown`: verifications (API) and paid requests (proxy) by day, network and outcome.
pub async fn breakdown(
    axum::extract::State(api): State,
    headers: HeaderMap,
    q: Result<Query<BreakdownQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let c = api.caller(&headers, "analytics").await?;
    let since_ms = query(q)?
        .since
        .map(|s| s * 1000)
        .unwrap_or_else(|| crate::clock::month_bounds(api.now_ms() / 1000).0 * 1000);
    let store = &api.app().payments.store;
    let rows = |b: crate::store::Breakdown| -> Vec<Value> {
        b.into_iter()
            .map(|(day, network, outcome, count)| json!({"day": day, "network": network, "outcome": outcome, "count": count}))
            .collect()
    };
    let v = store
        .verification_breakdown(&c.tenant.id, since_ms)
        .await
        .map_err(ApiError::db)?;
    let p = store
        .attempt_breakdown(&c.tenant.id, since_ms)
        .await
        .map_err(ApiError::db)?;
    Ok(Json(json!({
        "success": true,
        "since": rfc3339(since_ms / 1000),
        "verifications": rows(v),
        "proxy": rows(p),
    })))
}
