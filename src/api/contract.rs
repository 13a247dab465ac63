//! The contract's four endpoints (SAAS.md), field for field: create-tenant, usage, supported-chains,
//! verify.

use std::sync::Arc;

use alloy::primitives::U256;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::{Api, ApiError, Body, State};
use crate::chains::{ProofError, Rejection};
use crate::clock::{month_bounds, rfc3339};
use crate::store::{TenantRow, VerificationRow};
use crate::tenancy::{keys, ops, Plan};
use crate::x402::{AmountMatch, Offer, PaymentPayload, VerifyResponse};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    email: String,
    tier: String,
    name: Option<String>,
    /// Optional: the subdomain / path name; derived from the name or email otherwise.
    slug: Option<String>,
    /// Optional: a test key (`x402_test_…`) instead of a live one.
    #[serde(default)]
    test: bool,
}

/// `POST /admin/create-tenant` (admin key): a tenant and its first key, shown once.
pub async fn create_tenant(
    axum::extract::State(api): State,
    headers: HeaderMap,
    Body(b): Body<CreateTenant>,
) -> Result<impl IntoResponse, ApiError> {
    api.admin(&headers)?;
    let new = ops::NewTenant {
        email: b.email,
        tier: b.tier,
        name: b.name,
        slug: b.slug,
        live: !b.test,
    };
    let (row, key) =
        ops::create_tenant(&api.app().payments.store, &api.app().settings.plans, new, api.now_ms()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "success": true,
            "tenant": tenant_json(&row, &api),
            "api_key": key,
        })),
    ))
}

/// A tenant as the API shows it.
pub fn tenant_json(t: &TenantRow, api: &Api) -> Value {
    let routes: Value = serde_json::from_str(&t.routes).unwrap_or(Value::Array(vec![]));
    let app = api.app();
    let plan = app.settings.plans.get(&t.plan);
    json!({
        "id": t.id,
        "slug": t.slug,
        "name": t.name,
        "email": t.email,
        "tier": t.plan,
        "status": t.status,
        "upstream": t.upstream,
        "pay_to": {"evm": t.pay_to_evm, "solana": t.pay_to_solana},
        "routes": routes,
        "enabled_chains": plan.map(|p| p.enabled_names(&api.app().settings.networks)).unwrap_or_default(),
        "created_at": rfc3339(t.created_at / 1000),
        "updated_at": rfc3339(t.updated_at / 1000),
    })
}

/// A tenant's allowance now: (used, limit, remaining, reset time).
pub fn allowance(t: &TenantRow, plan: &Plan, now_ms: i64) -> (i64, i64, i64, i64) {
    let (period, next) = month_bounds(now_ms / 1000);
    let used = if t.period_start < period { 0 } else { t.used };
    let limit = plan.verifications;
    let remaining = if limit < 0 { -1 } else { (limit - used).max(0) };
    (used, limit, remaining, next)
}

pub(super) fn tenant_plan(api: &Api, t: &TenantRow) -> Result<Plan, ApiError> {
    if t.plan == super::auth::DROP_IN_PLAN {
        return Ok(super::auth::drop_in_plan(&api.app().settings));
    }
    api.app().settings.plans.get(&t.plan).cloned().ok_or_else(|| {
        tracing::error!(tenant = %t.id, plan = %t.plan, "tenant on a plan the config no longer defines");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            format!("plan '{}' is not defined on this gateway; contact the operator", t.plan),
        )
    })
}

/// `GET /usage`.
pub async fn usage(axum::extract::State(api): State, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let Caller { tenant, .. } = api.caller(&headers, "analytics").await?;
    let plan = tenant_plan(&api, &tenant)?;
    let (used, limit, remaining, next) = allowance(&tenant, &plan, api.now_ms());
    Ok(Json(json!({
        "tier": tenant.plan,
        "verifications_used": used,
        "verifications_limit": limit,
        "verifications_remaining": remaining,
        "quota_reset_date": rfc3339(next),
        "enabled_chains": plan.enabled_names(&api.app().settings.networks),
    })))
}

/// `GET /supported-chains`.
pub async fn supported_chains(axum::extract::State(api): State, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let Caller { tenant, .. } = api.caller(&headers, "analytics").await?;
    let plan = tenant_plan(&api, &tenant)?;
    let app = api.app();
    let all: Vec<&str> = app.settings.networks.iter().map(|n| n.network.name.as_str()).collect();
    Ok(Json(json!({
        "tier": tenant.plan,
        "enabled_chains": plan.enabled_names(&api.app().settings.networks),
        "all_chains": all,
    })))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyBody {
    #[serde(rename = "tx_hash")]
    tx_hash: Option<String>,
    chain: Option<String>,
    #[serde(rename = "expected_amount")]
    expected_amount: Option<Value>,
    #[schemars(with = "Option<serde_json::Value>")]
    payment_payload: Option<Box<serde_json::value::RawValue>>,
    payment_requirements: Option<Value>,
    /// Sent by x402 facilitator clients beside the two above.
    #[serde(default)]
    #[allow(dead_code)]
    x402_version: Option<u8>,
}

/// `POST /verify`: a proof (`tx_hash`, `chain`, `expected_amount`) or the x402 form
/// (`paymentPayload`, `paymentRequirements`).
pub async fn verify(
    axum::extract::State(api): State,
    headers: HeaderMap,
    Body(b): Body<VerifyBody>,
) -> Result<axum::response::Response, ApiError> {
    let caller = api.caller(&headers, "verify").await?;
    if let (Some(p), Some(r)) = (&b.payment_payload, &b.payment_requirements) {
        return Ok(Json(verify_x402(&api, &caller, p.get(), r, true).await?).into_response());
    }
    let tx = b
        .tx_hash
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::invalid("tx_hash: missing; give the transaction hash of the payment"))?;
    let chain_name = b
        .chain
        .as_deref()
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::invalid("chain: missing; give the chain the payment was made on, like 'base'"))?;
    Ok(Json(verify_proof(&api, &caller, tx, &chain_name, b.expected_amount.as_ref()).await?).into_response())
}

/// The chain a tenant may use: known, in its plan and run by this service.
pub(super) fn enabled_chain(
    api: &Api,
    t: &TenantRow,
    name: &str,
) -> Result<(Arc<dyn crate::chains::Chain>, Arc<crate::x402::Network>), ApiError> {
    let plan = tenant_plan(api, t)?;
    let known = crate::x402::network::builtin(name).is_some()
        || api.app().settings.networks.iter().any(|n| n.network.is_named(name))
        || name == "sei";
    if !known {
        return Err(ApiError::invalid(format!(
            "chain: '{name}' is not a chain this service knows; see GET /api/v1/x402/supported-chains"
        )));
    }
    let app = api.app();
    let configured = app.settings.networks.iter().find(|n| n.network.is_named(name));
    match configured {
        Some(n) if plan.allows(&n.network.name) => {
            let chain = api.app().payments.chain(&n.network.name).cloned().ok_or_else(|| {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "CHAIN_NOT_ENABLED",
                    format!("chain '{name}' is not available"),
                )
            })?;
            Ok((chain, n.network.clone()))
        }
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "CHAIN_NOT_ENABLED",
            format!(
                "chain '{name}' is not enabled on the '{}' plan; enabled: {}",
                t.plan,
                plan.enabled_names(&api.app().settings.networks).join(", ")
            ),
        )),
    }
}

/// Counts one verification; over the allowance → 429 with when it refills.
async fn count(api: &Api, t: &TenantRow) -> Result<(), ApiError> {
    let plan = tenant_plan(api, t)?;
    // A proof moves nothing: no gas to bound.
    match api.app().payments.count(&t.id, plan.verifications, -1).await {
        Ok(()) => Ok(()),
        Err(crate::payment::Refusal::OverQuota { reset, retry_after }) => Err(over_quota(api, t, reset, retry_after)),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "the service's database is unavailable; try again shortly",
        )),
    }
}

/// The contract's 429: when the allowance refills, and where to upgrade.
pub(super) fn over_quota(api: &Api, t: &TenantRow, reset: u64, retry_after: u64) -> ApiError {
    let limit = api.app().settings.plans.get(&t.plan).map_or(0, |p| p.verifications);
    let upgrade = api
        .app()
        .settings
        .hosted
        .as_ref()
        .map(|h| h.upgrade_url.clone())
        .unwrap_or_default();
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "QUOTA_EXCEEDED",
        format!(
            "the '{}' plan's {limit} verifications this month are used up; the allowance refills at {}",
            t.plan,
            rfc3339(reset as i64)
        ),
    )
    .with(json!({"upgrade_url": upgrade, "quota_reset_date": rfc3339(reset as i64)}));
    e.retry_after = Some(retry_after);
    e
}

/// Gives a count back when the service, not the verification, failed.
async fn uncount(api: &Api, t: &TenantRow) {
    let (period, _) = month_bounds(api.now_ms() / 1000);
    if let Err(e) = api.app().payments.store.uncount_use(&t.id, period).await {
        tracing::warn!(error = %e, "could not give back a verification count");
    }
}

/// The expected amount in atomic units: a number or string of USDC (`0.01`, `"1.50"`).
fn expected_atomic(v: Option<&Value>, decimals: u8) -> Result<Option<U256>, ApiError> {
    let text = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "expected_amount: {other} is not an amount of USDC like 0.01"
            )))
        }
    };
    if text.parse::<f64>().is_ok_and(|f| f == 0.0) {
        return Ok(None);
    }
    crate::money::parse_price(&format!("${text}"), decimals)
        .map(Some)
        .map_err(|_| {
            ApiError::invalid(format!(
                "expected_amount: '{text}' is not an amount of USDC like 0.01 (at most {decimals} decimals)"
            ))
        })
}

/// USDC as a JSON number (exact for any amount below 2^53 atomic units).
fn usdc_number(amount: U256, decimals: u8) -> Value {
    let atomic: u128 = amount.try_into().unwrap_or(u128::MAX);
    json!(atomic as f64 / 10f64.powi(decimals as i32))
}

async fn verify_proof(
    api: &Api,
    caller: &Caller,
    tx: &str,
    chain_name: &str,
    expected: Option<&Value>,
) -> Result<Value, ApiError> {
    let t = &caller.tenant;
    let (chain, network) = enabled_chain(api, t, chain_name)?;
    let expected = expected_atomic(expected, network.decimals)?;
    let Some(pay_to) = t.pay_to(network.family).map(str::to_string) else {
        let which = match network.family {
            crate::x402::Family::Evm => "EVM payTo address yet; set pay_to.evm",
            crate::x402::Family::Solana => "Solana payTo wallet yet; set pay_to.solana",
        };
        return Err(ApiError::invalid(format!(
            "this tenant has no {which} with PATCH /api/v1/x402/tenant"
        )));
    };
    count(api, t).await?;
    let now_ms = api.now_ms();
    let mut record = VerificationRow {
        id: keys::id("vr"),
        tenant_id: t.id.clone(),
        at_ms: now_ms,
        kind: "proof".into(),
        chain: network.name.clone(),
        tx_hash: Some(tx.to_string()),
        success: false,
        error_code: None,
        amount: None,
        payer: None,
        confirmations: None,
        risk_score: None,
    };
    let failed = |code: &'static str, msg: String, extra: Value| {
        let mut v = json!({
            "success": false, "tx_hash": tx, "chain": network.name, "amount_usdc": null,
            "from_address": null, "to_address": pay_to, "confirmations": 0, "risk_score": 100,
            "error": msg, "error_code": code,
        });
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    let proof = match chain.proof(tx, &pay_to).await {
        Ok(p) => p,
        Err(ProofError::Unavailable(m)) => {
            uncount(api, t).await;
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "CHAIN_UNAVAILABLE", m));
        }
        Err(ProofError::Malformed(m)) => {
            uncount(api, t).await;
            return Err(ApiError::invalid(format!("tx_hash: {m}")));
        }
        Err(e) => {
            let code = match e {
                ProofError::NotFound => "TX_NOT_FOUND",
                ProofError::Reverted => "TX_FAILED",
                ProofError::NoTransfer => "WRONG_RECIPIENT",
                _ => "CHAIN_NOT_ENABLED",
            };
            record.error_code = Some(code.into());
            save(api, &record).await;
            return Ok(failed(code, e.to_string(), json!({})));
        }
    };
    record.amount = Some(proof.amount.to_string());
    record.payer = Some(proof.from.clone());
    record.confirmations = Some(proof.confirmations as i64);
    let app = api.app();
    let hosted = app.settings.hosted.as_ref();
    let min_conf = hosted.map_or(1, |h| h.proof_confirmations);
    let max_age = hosted.map_or(0, |h| h.proof_max_age_secs);
    let age = (now_ms / 1000 - proof.block_time as i64).max(0) as u64;
    let base = |v: &mut Value, risk: u8| {
        if let Some(o) = v.as_object_mut() {
            o.insert("amount_usdc".into(), usdc_number(proof.amount, network.decimals));
            o.insert("amount_atomic".into(), json!(proof.amount.to_string()));
            o.insert("from_address".into(), json!(proof.from));
            o.insert("to_address".into(), json!(proof.to));
            o.insert("confirmations".into(), json!(proof.confirmations));
            o.insert("risk_score".into(), json!(risk));
        }
    };
    let check = if expected.is_some_and(|e| proof.amount < e) {
        Some((
            "AMOUNT_TOO_LOW",
            format!(
                "the transaction paid {} USDC, less than the expected {}",
                crate::money::format_usd(proof.amount, network.decimals),
                crate::money::format_usd(expected.unwrap_or_default(), network.decimals)
            ),
        ))
    } else if proof.confirmations < min_conf {
        Some((
            "INSUFFICIENT_CONFIRMATIONS",
            format!(
                "{} confirmation(s), this service needs {min_conf}; ask again shortly",
                proof.confirmations
            ),
        ))
    } else if max_age > 0 && age > max_age {
        Some((
            "TX_TOO_OLD",
            format!("the transaction is {age} s old; payments older than {max_age} s are not accepted"),
        ))
    } else {
        None
    };
    let seen = api
        .app()
        .payments
        .store
        .payer_seen(&t.id, &proof.from)
        .await
        .unwrap_or(true);
    let risk = risk_score(proof.confirmations, age, proof.amount, expected, !seen);
    record.risk_score = Some(risk as i32);
    if let Some((code, msg)) = check {
        record.error_code = Some(code.into());
        save(api, &record).await;
        let mut v = failed(code, msg, json!({}));
        base(&mut v, risk);
        return Ok(v);
    }
    // Consumed once per tenant: a second verification of this transaction is not a second payment.
    match api
        .app()
        .payments
        .store
        .consume_tx(&t.id, &network.name, &proof.tx, now_ms)
        .await
        .map_err(ApiError::db)?
    {
        Ok(()) => {}
        Err(first) => {
            record.error_code = Some("TX_ALREADY_USED".into());
            save(api, &record).await;
            let mut v = failed(
                "TX_ALREADY_USED",
                format!(
                    "this transaction was already verified as a payment at {}",
                    rfc3339(first / 1000)
                ),
                json!({"first_used_at": rfc3339(first / 1000)}),
            );
            base(&mut v, risk);
            return Ok(v);
        }
    }
    record.success = true;
    save(api, &record).await;
    let mut v = json!({"success": true, "tx_hash": proof.tx, "chain": network.name});
    base(&mut v, risk);
    Ok(v)
}

/// 0 (safe) to 100: a few plain factors, documented in the README ("Proof verification").
pub fn risk_score(confirmations: u64, age_secs: u64, amount: U256, expected: Option<U256>, first_time: bool) -> u8 {
    let mut r: u32 = 0;
    r += match confirmations {
        0..=1 => 30,
        2..=5 => 15,
        _ => 0,
    };
    if age_secs < 60 {
        r += 10;
    } else if age_secs > 86_400 {
        r += 20;
    }
    match expected {
        None => r += 10,
        Some(e) if amount > e * U256::from(10u64) => r += 10,
        _ => {}
    }
    if first_time {
        r += 20;
    }
    r.min(100) as u8
}

async fn save(api: &Api, v: &VerificationRow) {
    if let Err(e) = api.app().payments.store.insert_verification(v).await {
        tracing::error!(error = %e, "could not record a verification");
    }
}

/// The x402 form: the payment checked as a facilitator's `/verify` would (offline checks, then the
/// on-chain simulation), against the requirement the tenant's server sent — whose payee must be the
/// tenant's own payTo. Nothing is claimed or settled.
pub(super) async fn verify_x402(
    api: &Api,
    caller: &Caller,
    payload: &str,
    req: &Value,
    counted: bool,
) -> Result<VerifyResponse, ApiError> {
    let t = &caller.tenant;
    let payment: PaymentPayload =
        serde_json::from_str(payload).map_err(|e| ApiError::invalid(format!("paymentPayload: {e}")))?;
    let r = super::facilitator::Requirement::read(req)?;
    let (network_name, amount) = (r.network, r.amount);
    let invalid = |reason: &str, payer: Option<String>| VerifyResponse {
        is_valid: false,
        invalid_reason: Some(reason.to_string()),
        payer,
    };
    let (chain, network) = match enabled_chain(api, t, network_name) {
        Ok(c) => c,
        Err(e) if e.code == "CHAIN_NOT_ENABLED" => return Err(e),
        Err(_) => return Ok(invalid(crate::x402::reason::INVALID_NETWORK, None)),
    };
    if counted {
        count(api, t).await?;
    }
    let mut record = VerificationRow {
        id: keys::id("vr"),
        tenant_id: t.id.clone(),
        at_ms: api.now_ms(),
        kind: "x402".into(),
        chain: network.name.clone(),
        tx_hash: None,
        success: false,
        error_code: None,
        amount: Some(amount.to_string()),
        payer: None,
        confirmations: None,
        risk_score: None,
    };
    // Payee safety: only the tenant's own address; never whatever the caller put in.
    let own = t.pay_to(network.family).unwrap_or_default();
    if !r.own(t.pay_to(network.family), &network) {
        let why = crate::x402::reason::recipient_mismatch(network.family);
        record.error_code = Some(why.into());
        save(api, &record).await;
        return Ok(invalid(why, None));
    }
    let offer = Offer::exact(network.clone(), amount, own.to_string(), r.max_timeout);
    let now = api.app().payments.clock.now_secs();
    let result: Result<String, Rejection> = match chain.check_offline(&offer, AmountMatch::Exact, &payment, now) {
        Err(r) => Err(r),
        Ok(checked) => match chain.check_onchain(&checked).await {
            Ok(()) => Ok(checked.payer()),
            Err(crate::chains::ChainError::Rejected(r)) => Err(Rejection {
                payer: Some(checked.payer()),
                ..r
            }),
            Err(_) => {
                uncount(api, t).await;
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "CHAIN_UNAVAILABLE",
                    format!(
                        "the {} network cannot be reached right now; try again later",
                        network.name
                    ),
                ));
            }
        },
    };
    let answer = match result {
        Ok(payer) => {
            record.success = true;
            record.payer = Some(payer.clone());
            VerifyResponse {
                is_valid: true,
                invalid_reason: None,
                payer: Some(payer),
            }
        }
        Err(r) => {
            record.error_code = Some(r.reason.to_string());
            record.payer = r.payer.clone();
            invalid(&r.reason, r.payer)
        }
    };
    save(api, &record).await;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risk_grows_with_doubt() {
        let e = Some(U256::from(10_000u64));
        let safe = risk_score(12, 3600, U256::from(10_000u64), e, false);
        assert_eq!(safe, 0);
        assert_eq!(risk_score(1, 10, U256::from(10_000u64), e, true), 60);
        assert_eq!(risk_score(3, 100_000, U256::from(200_000u64), None, true), 65);
    }

    #[test]
    fn expected_amounts_in_usdc() {
        assert_eq!(
            expected_atomic(Some(&json!(0.01)), 6).unwrap(),
            Some(U256::from(10_000u64))
        );
        assert_eq!(
            expected_atomic(Some(&json!("1.5")), 6).unwrap(),
            Some(U256::from(1_500_000u64))
        );
        assert_eq!(expected_atomic(None, 6).unwrap(), None);
        assert!(expected_atomic(Some(&json!("abc")), 6).is_err());
        assert!(expected_atomic(Some(&json!(0.0000001)), 6).is_err());
    }
}
