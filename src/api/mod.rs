//! The management API (hosted mode's REST contract, `../shared/SAAS.md`), on its own listener:
//! tenants, keys, usage, and proof verification. It calls the same [`crate::payment::Payments`]
//! and store as the proxy, and never touches pingora.
//!
//! Errors keep the contract's shape, `{"success":false,"error":…,"error_code":…}`, mapped from
//! [`ApiError`] in one place.

mod admin;
mod auth;
mod contract;
mod facilitator;
mod manage;
pub mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Value};

use openapi::Doc;

use crate::app::{App, Live};
pub use auth::Keys;

/// What every handler shares.
pub struct Api {
    /// The configuration in force (a reload swaps it; each call reads the one in force).
    live: Arc<Live>,
    pub keys: Keys,
    /// `TOLLGATE_ADMIN_KEY`; admin endpoints answer 401 while it is unset.
    admin_key: Option<String>,
    /// The published routes, for `/discovery/resources`.
    pub catalog: crate::discovery::Catalog,
    /// Tenant rows for the facilitator endpoints (plan, standing, payTo), kept as long as keys are:
    /// a settle makes no query for its tenant. Changes made here take effect at once.
    pub settling: moka::sync::Cache<String, crate::store::TenantRow>,
}

type State = axum::extract::State<Arc<Api>>;

impl Api {
    pub fn new(live: Arc<Live>) -> Arc<Api> {
        let app = live.app();
        let bound = app.settings.hosted.as_ref().map_or(30, |h| h.key_cache_secs);
        let admin_key = std::env::var("TOLLGATE_ADMIN_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty());
        if admin_key.as_ref().is_some_and(|k| k.len() < 24) {
            tracing::warn!("TOLLGATE_ADMIN_KEY is shorter than 24 characters; use a long random value");
        }
        let catalog_ttl = app.settings.hosted.as_ref().map_or(30, |h| h.tenant_cache_secs);
        Arc::new(Api {
            keys: Keys::new(app.payments.store.clone(), bound),
            catalog: crate::discovery::Catalog::new(std::time::Duration::from_secs(catalog_ttl)),
            settling: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(bound))
                .build(),
            live,
            admin_key,
        })
    }

    /// The configuration in force.
    pub fn app(&self) -> Arc<App> {
        self.live.app()
    }

    fn now_ms(&self) -> i64 {
        self.app().payments.clock.now_ms() as i64
    }
}

/// Every endpoint: its documentation and its handler, in one table (the router and the OpenAPI
/// document are both built from it).
fn endpoints() -> Vec<(Doc, MethodRouter<Arc<Api>>)> {
    use openapi::{array, nullable, object, schema, t, Auth::*};
    let tenant = || {
        object(&[
            ("id", t("string")),
            ("slug", t("string")),
            ("name", t("string")),
            ("email", t("string")),
            ("tier", t("string")),
            ("status", t("string")),
            ("upstream", nullable("string")),
            ("pay_to", t("object")),
            ("routes", t("array")),
            ("enabled_chains", array(t("string"))),
            ("created_at", t("string")),
            ("updated_at", t("string")),
        ])
    };
    let ok_tenant = || object(&[("success", t("boolean")), ("tenant", tenant())]);
    let key = || {
        object(&[
            ("id", t("string")),
            ("name", t("string")),
            ("prefix", t("string")),
            ("scopes", array(t("string"))),
            ("created_at", t("string")),
            ("last_used_at", nullable("string")),
            ("revoked_at", nullable("string")),
        ])
    };
    let usage = object(&[
        ("tier", t("string")),
        ("verifications_used", t("integer")),
        ("verifications_limit", t("integer")),
        ("verifications_remaining", t("integer")),
        ("quota_reset_date", t("string")),
        ("enabled_chains", array(t("string"))),
    ]);
    let verify = json!({"oneOf": [
        object(&[
            ("success", t("boolean")), ("tx_hash", t("string")), ("chain", t("string")),
            ("amount_usdc", nullable("number")), ("from_address", nullable("string")),
            ("to_address", nullable("string")), ("confirmations", t("integer")), ("risk_score", t("integer")),
        ]),
        object(&[("isValid", t("boolean"))]),
    ]});
    let list = |field: &str| {
        object(&[
            ("success", t("boolean")),
            (field, t("array")),
            ("next_cursor", nullable("string")),
        ])
    };
    let filters: &[(&str, &str, &str)] = &[
        ("since", "integer", "unix seconds, inclusive"),
        ("until", "integer", "unix seconds, exclusive"),
        ("chain", "string", "a network name"),
        (
            "outcome",
            "string",
            "verifications: success | failure; payments: claimed | pending | settled",
        ),
        ("limit", "integer", "1 to 500 (default 50)"),
        ("cursor", "string", "the next_cursor of the previous page"),
    ];
    let d = |method, path, auth, summary, body: Option<Value>, query, ok: (u16, Value)| Doc {
        method,
        path,
        auth,
        summary,
        body,
        query,
        ok,
    };
    vec![
        (
            d("POST", "/api/v1/x402/admin/create-tenant", Admin, "Create a tenant and its first API key (shown once)",
              Some(schema::<contract::CreateTenant>()), &[],
              (201, object(&[("success", t("boolean")), ("tenant", tenant()), ("api_key", t("string"))]))),
            post(contract::create_tenant),
        ),
        (d("GET", "/api/v1/x402/usage", Key("analytics"), "This month's allowance and use", None, &[], (200, usage)), get(contract::usage)),
        (
            d("GET", "/api/v1/x402/supported-chains", Key("analytics"), "Chains enabled on the tenant's plan, and all the service runs", None, &[],
              (200, object(&[("tier", t("string")), ("enabled_chains", array(t("string"))), ("all_chains", array(t("string")))]))),
            get(contract::supported_chains),
        ),
        (
            d("POST", "/api/v1/x402/verify", Key("verify"),
              "Verify a payment: a transfer already on chain (tx_hash, chain, expected_amount; consumed once), or the x402 form (paymentPayload, paymentRequirements)",
              Some(schema::<contract::VerifyBody>()), &[], (200, verify)),
            post(contract::verify),
        ),
        (
            d("GET", "/api/v1/x402/usage/breakdown", Key("analytics"), "Verifications and proxy payments by day, network and outcome", None,
              &[("since", "integer", "unix seconds (default: this month)")],
              (200, object(&[("success", t("boolean")), ("since", t("string")), ("verifications", t("array")), ("proxy", t("array"))]))),
            get(manage::breakdown),
        ),
        (d("GET", "/api/v1/x402/keys", Key("manage"), "The tenant's keys (prefixes only)", None, &[],
           (200, object(&[("success", t("boolean")), ("keys", array(key()))]))), get(manage::list_keys)),
        (
            d("POST", "/api/v1/x402/keys", Key("manage"), "Create a key (shown once)", Some(schema::<manage::NewKeyBody>()), &[],
              (201, object(&[("success", t("boolean")), ("key", key()), ("api_key", t("string"))]))),
            post(manage::create_key),
        ),
        (d("DELETE", "/api/v1/x402/keys/{id}", Key("manage"), "Revoke a key", None, &[],
           (200, object(&[("success", t("boolean")), ("revoked", t("string"))]))), delete(manage::revoke_key)),
        (d("GET", "/api/v1/x402/tenant", Key("manage"), "The tenant's settings", None, &[], (200, ok_tenant())), get(manage::show_tenant)),
        (
            d("PATCH", "/api/v1/x402/tenant", Key("manage"), "Change the tenant's upstream, routes, payTo or name",
              Some(schema::<manage::TenantPatch>()), &[], (200, ok_tenant())),
            patch(manage::update_tenant),
        ),
        (d("GET", "/api/v1/x402/verifications", Key("analytics"), "Verifications, newest first", None, filters, (200, list("verifications"))),
         get(manage::verifications)),
        (d("GET", "/api/v1/x402/payments", Key("analytics"), "Payments through the proxy, newest first", None, filters, (200, list("payments"))),
         get(manage::payments)),
        (
            d("GET", "/api/v1/x402/admin/tenants", Admin, "List tenants", None,
              &[("after", "string", "the next_cursor of the previous page"), ("limit", "integer", "1 to 1000 (default 100)")],
              (200, object(&[("success", t("boolean")), ("tenants", array(tenant())), ("next_cursor", nullable("string"))]))),
            get(admin::list),
        ),
        (d("GET", "/api/v1/x402/admin/tenants/{id}", Admin, "A tenant and this month's usage", None, &[], (200, ok_tenant())), get(admin::show)),
        (d("POST", "/api/v1/x402/admin/tenants/{id}/plan", Admin, "Move a tenant to another plan", Some(schema::<admin::PlanBody>()), &[], (200, ok_tenant())),
         post(admin::set_plan)),
        (d("POST", "/api/v1/x402/admin/tenants/{id}/suspend", Admin, "Suspend a tenant", None, &[], (200, ok_tenant())), post(admin::suspend)),
        (d("POST", "/api/v1/x402/admin/tenants/{id}/resume", Admin, "Reactivate a tenant", None, &[], (200, ok_tenant())), post(admin::resume)),
        (
            d("POST", "/facilitator/verify", Key("verify"), "x402 facilitator: verify a payment (checks only)",
              Some(schema::<facilitator::FacilitatorBody>()), &[], (200, object(&[("isValid", t("boolean"))]))),
            post(facilitator::verify),
        ),
        (
            d("POST", "/facilitator/settle", Key("settle"),
              "x402 facilitator: settle a payment to the tenant's own payTo (a retried settle of a pending payload collects its transaction)",
              Some(schema::<facilitator::FacilitatorBody>()), &[],
              (200, object(&[("success", t("boolean")), ("transaction", t("string")), ("network", t("string"))]))),
            post(facilitator::settle),
        ),
        (
            d("GET", "/facilitator/supported", Key("verify"), "x402 facilitator: the kinds, extensions and signers for the tenant's plan", None, &[],
              (200, object(&[("kinds", t("array")), ("extensions", t("array")), ("signers", t("object"))]))),
            get(facilitator::supported),
        ),
        (
            d("GET", "/discovery/resources", Public,
              "x402 discovery (bazaar): the priced routes tenants publish (discoverable = true)", None,
              &[("type", "string", "http (the only type)"), ("limit", "integer", "1 to 1000 (default 100)"), ("offset", "integer", "items to skip")],
              (200, object(&[("x402Version", t("integer")), ("items", t("array")), ("pagination", t("object"))]))),
            get(facilitator::discovery),
        ),
        (d("GET", "/status", Public, "Alive, and how many configurations were loaded (1 at start, one more per reload)", None, &[],
           (200, object(&[("status", t("string")), ("config_generation", t("integer"))]))),
         get(|axum::extract::State(api): State| async move {
             Json(json!({"status": "ok", "config_generation": api.live.generation()}))
         })),
        (d("GET", "/status/ready", Public,
           "Ready: the database, every chain RPC and every signer's funds answer; otherwise 503 naming each failing check",
           None, &[], (200, object(&[("status", t("string")), ("checks", t("object"))]))),
         get(|axum::extract::State(api): State| async move { crate::health::ready_response(&api.app()).await })),
    ]
}

/// The OpenAPI document of this API.
pub fn openapi_document() -> Value {
    let docs: Vec<Doc> = endpoints().into_iter().map(|(d, _)| d).collect();
    openapi::document(&docs)
}

/// The router: every endpoint of the table, and the document describing them.
pub fn router(api: Arc<Api>) -> Router {
    let doc = Arc::new(openapi_document());
    let mut r = Router::new();
    for (d, route) in endpoints() {
        r = r.route(d.path, route);
    }
    r.route("/api/v1/openapi.json", get(move || async move { Json((*doc).clone()) }))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such endpoint; see /api/v1/openapi.json",
            )
        })
        // Bodies are small JSON documents.
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .with_state(api)
}

/// Serves the management API on `addr` (or on `inherited`, its socket handed over by the previous
/// process in an upgrade) until the process ends; returns the listening descriptor.
pub async fn serve(
    addr: SocketAddr,
    api: Arc<Api>,
    inherited: Option<std::net::TcpListener>,
) -> Result<std::os::fd::RawFd, String> {
    crate::upgrade::serve_router("management API", "api.listen", addr, router(api), inherited).await
}

/// A refusal in the contract's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    extra: Option<serde_json::Value>,
    /// A rate limit's `RateLimit-*` headers.
    limit: Option<crate::ratelimit::Decision>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            extra: None,
            limit: None,
        }
    }
    /// A rate limit refused the call: 429 `RATE_LIMITED` with `Retry-After` and `RateLimit-*`.
    pub fn rate_limited(d: &crate::ratelimit::Decision) -> ApiError {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", d.detail());
        e.limit = Some(*d);
        e.extra = Some(json!({"scope": d.scope.as_str()}));
        e
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "INVALID_API_KEY", message)
    }
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no {what} with that id"))
    }
    /// The database failed: 503, the detail to the log only.
    pub fn db(e: crate::store::StoreError) -> ApiError {
        tracing::error!(error = %e, "management API: database unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "the service's database is unavailable; try again shortly",
        )
    }
    fn with(mut self, extra: serde_json::Value) -> ApiError {
        self.extra = Some(extra);
        self
    }
}

impl From<crate::tenancy::ops::OpsError> for ApiError {
    fn from(e: crate::tenancy::ops::OpsError) -> Self {
        use crate::tenancy::ops::OpsError::*;
        match e {
            Invalid(m) => ApiError::invalid(m),
            e @ SlugTaken(_) => ApiError::new(StatusCode::CONFLICT, "SLUG_TAKEN", e.to_string()),
            NotFound(what) => ApiError::not_found(what),
            Db(e) => ApiError::db(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"success": false, "error": self.message, "error_code": self.code});
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) = (self.extra, body.as_object_mut()) {
            obj.extend(extra);
        }
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_str(&s.to_string()).expect("digits"));
        }
        if let Some(d) = self.limit {
            for (name, value) in d.headers() {
                resp.headers_mut()
                    .insert(name, HeaderValue::from_str(&value).expect("ascii"));
            }
        }
        resp.headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-store"));
        resp
    }
}

/// A JSON body that failed to parse, said as the contract's 400.
pub struct Body<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::invalid(format!("the body could not be read: {e}")))?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::invalid(format!("the body is not the expected JSON: {e}")))
    }
}
