//! What an operator also needs (admin key): list and show tenants, change a plan, suspend and resume.

use axum::extract::{Path, Query};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::contract::{allowance, tenant_json};
use super::{Api, ApiError, Body, State};
use crate::store::TenantChange;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Page {
    after: Option<String>,
    limit: Option<u32>,
}

/// `GET /admin/tenants?after=&limit=`.
pub async fn list(
    axum::extract::State(api): State,
    headers: HeaderMap,
    q: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    api.admin(&headers)?;
    let p = q
        .map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))?;
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let rows = api
        .app()
        .payments
        .store
        .tenants(p.after.as_deref(), limit)
        .await
        .map_err(ApiError::db)?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(json!({
        "success": true,
        "tenants": rows.iter().map(|t| tenant_json(t, &api)).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// `GET /admin/tenants/{id}`: settings and this month's usage.
pub async fn show(
    axum::extract::State(api): State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    api.admin(&headers)?;
    let t = api
        .app()
        .payments
        .store
        .tenant(&id)
        .await
        .map_err(ApiError::db)?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let mut v = tenant_json(&t, &api);
    if let (Some(plan), Some(o)) = (api.app().settings.plans.get(&t.plan), v.as_object_mut()) {
        let (used, limit, remaining, next) = allowance(&t, plan, api.now_ms());
        o.insert(
            "usage".into(),
            json!({"verifications_used": used, "verifications_limit": limit, "verifications_remaining": remaining, "quota_reset_date": crate::clock::rfc3339(next)}),
        );
    }
    Ok(Json(json!({"success": true, "tenant": v})))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    tier: String,
}

/// `POST /admin/tenants/{id}/plan {"tier"}`.
pub async fn set_plan(
    axum::extract::State(api): State,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(b): Body<PlanBody>,
) -> Result<Json<Value>, ApiError> {
    api.admin(&headers)?;
    change(
        &api,
        &id,
        TenantChange {
            plan: Some(b.tier),
            ..Default::default()
        },
    )
    .await
}

/// `POST /admin/tenants/{id}/suspend`.
pub async fn suspend(
    axum::extract::State(api): State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    standing(&api, &headers, &id, "suspended").await
}

/// `POST /admin/tenants/{id}/resume`.
pub async fn resume(
    axum::extract::State(api): State,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    standing(&api, &headers, &id, "active").await
}

/// Sets a tenant's standing (`active` or `suspended`).
async fn standing(api: &Api, headers: &HeaderMap, id: &str, status: &str) -> Result<Json<Value>, ApiError> {
    api.admin(headers)?;
    let c = TenantChange {
        status: Some(status.into()),
        ..Default::default()
    };
    change(api, id, c).await
}

async fn change(api: &Api, id: &str, c: TenantChange) -> Result<Json<Value>, ApiError> {
    let t = crate::tenancy::ops::change_tenant(
        &api.app().payments.store,
        &api.app().settings.plans,
        id,
        c,
        api.now_ms(),
    )
    .await?;
    if let Some(h) = api.app().directory.hosted() {
        h.forget(&t.slug);
    }
    api.settling.invalidate(&t.id);
    Ok(Json(json!({"success": true, "tenant": tenant_json(&t, api)})))
}
