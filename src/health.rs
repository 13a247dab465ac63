//! The metrics listener: Prometheus `/metrics`, `/status` (alive) and `/status/ready` (every
//! dependency answers). Readiness is 200 only when the database answers, every configured chain's
//! RPC answers and every signer (relayer, fee payer) is funded; otherwise 503 with a JSON body that
//! names each failing check (the Kong / APISIX convention).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::app::{App, Live};

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The routes served on the metrics listener (the management API serves `/status` and
/// `/status/ready` too, in its own endpoint table).
pub fn router(live: Arc<Live>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(alive))
        .route("/status/ready", get(ready))
        .with_state(live)
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        crate::metrics::METRICS.render(),
    )
}

/// `{"status":"ok","config_generation":N}`: N counts the configurations loaded (1 at start, one
/// more per reload that took), which is how `tollgate reload` tells that its reload took.
async fn alive(axum::extract::State(live): axum::extract::State<Arc<Live>>) -> impl IntoResponse {
    axum::Json(json!({"status": "ok", "config_generation": live.generation()}))
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(CHECK_TIMEOUT, f).await.ok()
}

/// Runs every readiness check; `(all passed, each check's result)`.
pub async fn readiness(app: &App) -> (bool, Map<String, Value>) {
    let mut checks = Map::new();
    let mut ok = true;
    let mut put = |name: String, r: Result<(), String>| {
        ok &= r.is_ok();
        checks.insert(
            name,
            match r {
                Ok(()) => json!({"status": "ok"}),
                Err(why) => json!({"status": "failing", "detail": why}),
            },
        );
    };
    let db = match within(app.payments.store.ping()).await {
        Some(Ok(())) => Ok(()),
        Some(Err(_)) => Err("the database does not answer; check `database`".to_string()),
        None => Err("the database did not answer within 3 s".to_string()),
    };
    put("database".into(), db);
    for c in app.payments.chains() {
        let name = c.network().name.clone();
        let rpc = within(c.ping())
            .await
            .unwrap_or_else(|| Err(format!("the {name} RPC did not answer within 3 s")));
        let rpc_ok = rpc.is_ok();
        put(format!("chain:{name}"), rpc);
        if rpc_ok {
            if let Some(Some(funds)) = within(c.check_signer_funds()).await {
                put(format!("signer:{name}"), funds);
            }
        }
    }
    (ok, checks)
}

async fn ready(axum::extract::State(live): axum::extract::State<Arc<Live>>) -> axum::response::Response {
    ready_response(&live.app()).await
}

/// `/status/ready`'s answer: 200 when every check passes, 503 naming each failing one.
pub async fn ready_response(app: &App) -> axum::response::Response {
    let (ok, checks) = readiness(app).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"status": if ok { "ready" } else { "not_ready" }, "checks": checks});
    (status, axum::Json(body)).into_response()
}

/// Binds the metrics listener (or takes `inherited`, handed over in an upgrade) and serves it in
/// the background; returns the listening descriptor.
pub async fn serve(
    addr: SocketAddr,
    live: Arc<Live>,
    inherited: Option<std::net::TcpListener>,
) -> Result<std::os::fd::RawFd, String> {
    crate::upgrade::serve_router("metrics and health", "metrics.listen", addr, router(live), inherited).await
}
