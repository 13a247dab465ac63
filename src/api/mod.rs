//! The management API (hosted mode's REST contract, `../shared/SAAS.md`), on its own listener:
//! tenants, keys, usage, and proof verification. It calls the same [`crate::payment::Payments`]
//! and store as the proxy, and never touches pingora.
//!
//! Errors keep the contract's shape, `{"success":false,"error":…,"error_code":…}`, mapped from
//! [`ApiError`] in one place.

mod admin;
mod auth;
mod contract;
mod manage;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::app::App;
pub use auth::Keys;

/// What every handler shares.
pub struct Api {
    pub app: Arc<App>,
    pub keys: Keys,
    /// `TOLLGATE_ADMIN_KEY`; admin endpoints answer 401 while it is unset.
    admin_key: Option<String>,
}

type State = axum::extract::State<Arc<Api>>;

impl Api {
    pub fn new(app: Arc<App>) -> Arc<Api> {
        let bound = app.settings.hosted.as_ref().map_or(30, |h| h.key_cache_secs);
        let admin_key = std::env::var("TOLLGATE_ADMIN_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty());
        if admin_key.as_ref().is_some_and(|k| k.len() < 24) {
            tracing::warn!("TOLLGATE_ADMIN_KEY is shorter than 24 characters; use a long random value");
        }
        Arc::new(Api {
            keys: Keys::new(app.payments.store.clone(), bound),
            app,
            admin_key,
        })
    }

    fn now_ms(&self) -> i64 {
        self.app.payments.clock.now_ms() as i64
    }
}

/// The router: the contract's four endpoints, then what tenants and operators also need.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1/x402/admin/create-tenant", post(contract::create_tenant))
        .route("/api/v1/x402/usage", get(contract::usage))
        .route("/api/v1/x402/supported-chains", get(contract::supported_chains))
        .route("/api/v1/x402/verify", post(contract::verify))
        .route("/api/v1/x402/usage/breakdown", get(manage::breakdown))
        .route("/api/v1/x402/keys", get(manage::list_keys).post(manage::create_key))
        .route("/api/v1/x402/keys/{id}", delete(manage::revoke_key))
        .route(
            "/api/v1/x402/tenant",
            get(manage::show_tenant).patch(manage::update_tenant),
        )
        .route("/api/v1/x402/verifications", get(manage::verifications))
        .route("/api/v1/x402/payments", get(manage::payments))
        .route("/api/v1/x402/admin/tenants", get(admin::list))
        .route("/api/v1/x402/admin/tenants/{id}", get(admin::show))
        .route("/api/v1/x402/admin/tenants/{id}/plan", post(admin::set_plan))
        .route("/api/v1/x402/admin/tenants/{id}/suspend", post(admin::suspend))
        .route("/api/v1/x402/admin/tenants/{id}/resume", post(admin::resume))
        .route("/status", get(|| async { Json(json!({"status": "ok"})) }))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such endpoint; see /api/v1/x402/…",
            )
        })
        // Bodies are small JSON documents.
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .with_state(api)
}

/// Serves the management API on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, api: Arc<Api>) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("api.listen {addr}: {e}"))?;
    tracing::info!(%addr, "management API listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(api)).await {
            tracing::error!(error = %e, "management API stopped");
        }
    });
    Ok(())
}

/// A refusal in the contract's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            extra: None,
        }
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
