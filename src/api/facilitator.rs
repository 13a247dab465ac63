//! The x402 facilitator API for stock resource servers (`@x402/express`, the Python middleware,
//! x402-rs's axum layer): `POST /facilitator/verify`, `POST /facilitator/settle`,
//! `GET /facilitator/supported`, authenticated by the tenant's key as a bearer token.
//!
//! Settlement goes through the same [`crate::payment::Payments`] as the proxy: the same offline and
//! on-chain checks, ledger row and replay guard, relayer, and quota. A tenant can only settle to its
//! own payTo address, so a leaked key cannot move other people's authorizations to another payee
//! through the operator's relayer. A refusal is a 200 with `isValid:false` / `success:false`; a
//! 4xx/5xx means the call itself failed.

use std::sync::Arc;

use alloy::primitives::U256;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, Body, State};
use crate::payment::idempotency::IdStart;
use crate::payment::Refusal;
use crate::store::{Attempt, Delivery};
use crate::tenant::{Account, Pricing, SettleTiming};
use crate::x402::Family;
use crate::x402::{identifier, reason, AmountMatch, Asked, Offer, PaymentPayload, Version};

/// The body stock servers send to `/verify` and `/settle`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorBody {
    #[serde(default)]
    x402_version: Option<u8>,
    #[schemars(with = "serde_json::Value")]
    pub payment_payload: Box<serde_json::value::RawValue>,
    pub payment_requirements: Value,
}

/// The fields of a payment requirement (v1 or v2 shape) tollgate reads.
pub struct Requirement<'a> {
    pub network: &'a str,
    pub amount: U256,
    pub pay_to: &'a str,
    pub asset: Option<&'a str>,
    pub max_timeout: u64,
    /// v1: the resource URL the requirement names.
    pub resource: Option<&'a str>,
}

impl<'a> Requirement<'a> {
    pub fn read(req: &'a Value) -> Result<Requirement<'a>, ApiError> {
        let field = |k: &str| req.get(k).and_then(Value::as_str);
        let network = field("network").ok_or_else(|| ApiError::invalid("paymentRequirements.network: missing"))?;
        let amount_text = field("amount")
            .or_else(|| field("maxAmountRequired"))
            .ok_or_else(|| ApiError::invalid("paymentRequirements.amount (or maxAmountRequired): missing"))?;
        let amount = U256::from_str_radix(amount_text, 10).map_err(|_| {
            ApiError::invalid(format!(
                "paymentRequirements.amount: '{amount_text}' is not atomic units"
            ))
        })?;
        let pay_to = field("payTo").ok_or_else(|| ApiError::invalid("paymentRequirements.payTo: missing"))?;
        if field("scheme").is_some_and(|s| s != "exact") {
            return Err(ApiError::invalid("paymentRequirements.scheme: only 'exact' is served"));
        }
        Ok(Requirement {
            network,
            amount,
            pay_to,
            asset: field("asset"),
            max_timeout: req.get("maxTimeoutSeconds").and_then(Value::as_u64).unwrap_or(60),
            resource: field("resource"),
        })
    }

    /// Whether the payee and asset are the tenant's own payTo and the network's USDC (hex EVM
    /// addresses compare without case; Solana's base58 exactly).
    pub fn own(&self, tenant_pay_to: Option<&str>, network: &crate::x402::Network) -> bool {
        let same = |a: &str, b: &str| match network.family {
            crate::x402::Family::Evm => a.eq_ignore_ascii_case(b),
            crate::x402::Family::Solana => a == b,
        };
        tenant_pay_to.is_some_and(|own| same(own, self.pay_to)) && self.asset.is_none_or(|a| same(a, &network.asset))
    }
}

/// `POST /facilitator/verify`: the x402 form of `/verify` (checks only; nothing claimed or moved).
pub async fn verify(
    axum::extract::State(api): State,
    headers: HeaderMap,
    Body(b): Body<FacilitatorBody>,
) -> Result<Json<Value>, ApiError> {
    let caller = api.payee(&headers, "verify").await?;
    id_rules(b.payment_payload.get())?;
    // Not counted: a stock server verifies every payment before settling it, and the settlement is
    // what counts (one per payment). The contract's own `/api/v1/x402/verify` counts every call.
    match super::contract::verify_x402(&api, &caller, b.payment_payload.get(), &b.payment_requirements, false).await {
        Ok(v) => Ok(Json(serde_json::to_value(v).expect("serializes"))),
        Err(e) if e.code == "CHAIN_NOT_ENABLED" => Ok(Json(
            json!({"isValid": false, "invalidReason": reason::INVALID_NETWORK}),
        )),
        Err(e) => Err(e),
    }
}

/// `POST /facilitator/settle`.
pub async fn settle(
    axum::extract::State(api): State,
    headers: HeaderMap,
    Body(b): Body<FacilitatorBody>,
) -> Result<Json<Value>, ApiError> {
    let caller = api.payee(&headers, "settle").await?;
    let t = &caller.tenant;
    let payment: PaymentPayload =
        serde_json::from_str(b.payment_payload.get()).map_err(|e| ApiError::invalid(format!("paymentPayload: {e}")))?;
    let version = match b.x402_version.unwrap_or(payment.x402_version) {
        1 => Version::V1,
        2 => Version::V2,
        v => return Err(ApiError::invalid(format!("x402Version: {v} is not 1 or 2"))),
    };
    let req = Requirement::read(&b.payment_requirements)?;
    // The payment-identifier extension: a settle already answered for this id and payload is
    // answered the same; another payload under the id is a conflict.
    let sent = identifier::read(payment.extensions.as_deref()).map_err(ApiError::invalid)?;
    let payments = &api.app().payments;
    let payload = b.payment_payload.get().as_bytes();
    let hold = match payments.hold_id(&t.id, &sent, sent.required, payload).await {
        Ok(IdStart::Untracked) => None,
        Ok(IdStart::Held(h)) => Some(h),
        Ok(IdStart::Answered(a)) => {
            return serde_json::from_str(&a).map(Json).map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "a stored answer is unreadable",
                )
            })
        }
        Ok(IdStart::Conflict) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "PAYMENT_ID_CONFLICT",
                "this payment identifier was used for another payment; use a new id for a new payment",
            ))
        }
        Ok(IdStart::InProgress) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "PAYMENT_ID_IN_PROGRESS",
                "a settlement with this payment identifier is running; send it again shortly",
            ))
        }
        Err(Refusal::Unavailable(m)) => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", m))
        }
        Err(e) => return Err(ApiError::invalid(format!("paymentPayload: {e}"))),
    };
    let answer = settle_once(&api, t, version, payment, &req).await;
    if let Some(h) = &hold {
        match &answer {
            // Settled: kept for retries under this id.
            Ok(Json(v)) if v["success"] == json!(true) => payments.finish_id(h, Some(&v.to_string())).await,
            // In doubt: only this payment may come back for it.
            Ok(Json(v)) if v["errorReason"] == json!(reason::SETTLEMENT_PENDING) => payments.finish_id(h, None).await,
            // Refused or failed: nothing was charged; the id is free again.
            _ => payments.forget_id(h).await,
        }
    }
    answer
}

/// The payment-identifier rules a verify checks too: a well-formed id, present when required.
fn id_rules(payload: &str) -> Result<(), ApiError> {
    // An unreadable payload is the verification's to refuse, with its own reason.
    let Ok(payment) = serde_json::from_str::<PaymentPayload>(payload) else {
        return Ok(());
    };
    let sent = identifier::read(payment.extensions.as_deref()).map_err(ApiError::invalid)?;
    if sent.required && sent.id.is_none() {
        return Err(ApiError::invalid(format!(
            "paymentPayload.extensions.{}.info.id: required by this resource and missing",
            identifier::EXTENSION
        )));
    }
    Ok(())
}

/// One settlement through the pipeline, answered in the facilitator's words.
async fn settle_once(
    api: &super::Api,
    t: &crate::store::TenantRow,
    version: Version,
    payment: PaymentPayload,
    req: &Requirement<'_>,
) -> Result<Json<Value>, ApiError> {
    let refused = |why: &str, payer: Option<String>, tx: Option<String>| {
        Json(
            json!({"success": false, "errorReason": why, "transaction": tx.unwrap_or_default(),
                    "network": req.network, "payer": payer}),
        )
    };
    let (_, network) = match super::contract::enabled_chain(api, t, req.network) {
        Ok(c) => c,
        Err(_) => return Ok(refused(reason::INVALID_NETWORK, None, None)),
    };
    // Payee safety: the operator's relayer only ever pays the tenant's own address.
    let own = t.pay_to(network.family);
    if !req.own(own, &network) {
        return Ok(refused(reason::recipient_mismatch(network.family), None, None));
    }
    let offer = Offer::exact(
        network.clone(),
        req.amount,
        own.unwrap_or_default().to_string(),
        req.max_timeout,
    );
    let pricing = Arc::new(Pricing {
        offers: vec![offer],
        description: String::new(),
        mime_type: "application/json".into(),
        settle: SettleTiming::Before,
        // A facilitator's settle answers with the transaction in a block.
        answer: Default::default(),
        amount: AmountMatch::Exact,
        payment_id: Default::default(),
    });
    let asked = Asked {
        url: req
            .resource
            .map(str::to_string)
            .or_else(|| payment.resource.as_ref().map(|r| r.url.clone()))
            .unwrap_or_default(),
        method: "GET".into(),
    };
    let plan = super::contract::tenant_plan(api, t)?;
    let account = Account {
        id: &t.id,
        // The drop-in gateway's one tenant is not metered (and has no counter row).
        quota: (t.plan != super::auth::DROP_IN_PLAN).then_some(plan.verifications),
        gas_budget: plan.gas_per_month,
        limits: plan.limits.as_deref(),
    };
    let payments = &api.app().payments;
    let mut rec = Attempt {
        at_ms: payments.clock.now_ms(),
        tenant: t.id.clone(),
        route: ROUTE.into(),
        method: "POST".into(),
        path: "/facilitator/settle".into(),
        ..Default::default()
    };
    let network_id = pricing.offers[0].network_id(version);
    let answer = match payments
        .accept_payment(account, &pricing, ROUTE, &asked, version, payment, &mut rec)
        .await
    {
        Ok(a) => {
            let payer = a.payer();
            match &a.outcome {
                Some(crate::chains::SettleOutcome::Settled { tx, .. }) => {
                    Json(json!({"success": true, "transaction": tx, "network": network_id, "payer": payer}))
                }
                // Sent, receipt not there in time: the same payload, settled again, collects it.
                Some(crate::chains::SettleOutcome::Pending { tx } | crate::chains::SettleOutcome::Underway { tx }) => {
                    payments.delivered(&a.key, Delivery::Owed).await;
                    refused(reason::SETTLEMENT_PENDING, Some(payer), Some(tx.clone()))
                }
                None => refused(reason::UNEXPECTED_SETTLE, Some(payer), None),
            }
        }
        Err(Refusal::Rejected(r)) => refused(&r.reason, r.payer.or_else(|| rec.payer.clone()), None),
        Err(Refusal::Pending { tx, .. }) => refused(reason::SETTLEMENT_PENDING, rec.payer.clone(), tx),
        Err(Refusal::Malformed(m)) => return Err(ApiError::invalid(format!("paymentPayload: {m}"))),
        Err(Refusal::Unavailable(m)) => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", m))
        }
        Err(Refusal::OverQuota { reset, retry_after }) => {
            return Err(super::contract::over_quota(api, t, reset, retry_after))
        }
        Err(Refusal::RateLimited(d)) => return Err(ApiError::rate_limited(&d)),
        Err(Refusal::OverGasBudget { reset, retry_after }) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "GAS_BUDGET_EXCEEDED",
                format!(
                    "the '{}' plan's settlement gas for this month is used up; it refills at {}",
                    t.plan,
                    crate::clock::rfc3339(reset as i64)
                ),
            );
            e.retry_after = Some(retry_after);
            return Err(e);
        }
    };
    let (outcome, why) = match answer.0["success"].as_bool() {
        Some(true) => (crate::store::Outcome::Settled, None),
        _ => (
            crate::store::Outcome::Rejected,
            answer.0["errorReason"].as_str().map(str::to_string),
        ),
    };
    rec.outcome.get_or_insert(outcome);
    rec.reason = rec.reason.take().or(why);
    payments.record(rec);
    Ok(answer)
}

/// The route label of facilitator payments in the ledger.
const ROUTE: &str = "facilitator";

/// `GET /facilitator/supported`: exactly the tenant plan's networks, both versions, and the relayers.
pub async fn supported(axum::extract::State(api): State, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let caller = api.payee(&headers, "verify").await?;
    let plan = super::contract::tenant_plan(&api, &caller.tenant)?;
    let mut kinds = Vec::new();
    let (mut evm, mut svm): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for ns in plan.enabled(&api.app().settings.networks) {
        let n = &ns.network;
        let extra = match n.family {
            Family::Evm => json!({"name": n.eip712_name, "version": n.eip712_version}),
            Family::Solana => json!({"feePayer": n.fee_payer}),
        };
        for (v, id) in [(2, &n.caip2), (1, &n.name)] {
            kinds.push(json!({"x402Version": v, "scheme": "exact", "network": id, "extra": extra}));
        }
        let list = match n.family {
            Family::Evm => &mut evm,
            Family::Solana => &mut svm,
        };
        for s in api
            .app()
            .payments
            .chain(&n.name)
            .map(|c| c.signers())
            .unwrap_or_default()
        {
            if !list.contains(&s) {
                list.push(s);
            }
        }
    }
    let mut signers = serde_json::Map::new();
    signers.insert("eip155:*".into(), json!(evm));
    if !svm.is_empty() {
        signers.insert("solana:*".into(), json!(svm));
    }
    Ok(Json(
        json!({"kinds": kinds, "extensions": [identifier::EXTENSION, "bazaar"], "signers": signers}),
    ))
}

/// The query of `/discovery/resources`.
#[derive(Deserialize)]
pub struct DiscoveryQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// `GET /discovery/resources`: the bazaar catalog of published routes (public, like the spec's).
pub async fn discovery(
    axum::extract::State(api): State,
    axum::extract::Query(q): axum::extract::Query<DiscoveryQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.kind.as_deref().is_some_and(|k| k != "http") {
        return Err(ApiError::invalid("type: only 'http' resources are listed"));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(format!("limit: {limit} is not between 1 and 1000")));
    }
    let offset = q.offset.unwrap_or(0);
    let items = api.catalog.items(&api.app()).await.map_err(ApiError::db)?;
    let page: Vec<&Value> = items.iter().skip(offset).take(limit).collect();
    Ok(Json(json!({
        "x402Version": 2,
        "items": page,
        "pagination": {"limit": limit, "offset": offset, "total": items.len()},
    })))
}
