//! Discovery: what is for sale, for clients and catalogs. The proxy's `/.well-known/x402` describes
//! one tenant's priced routes; the facilitator's `/discovery/resources` (the bazaar shape of
//! FACILITATOR.md) lists the routes tenants chose to publish (`discoverable = true`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::Settings;
use crate::store::Store;
use crate::tenant::Route;

/// Where a proxy answers its discovery document.
pub const WELL_KNOWN: &str = "/.well-known/x402";

/// One priced route as a catalog item: its URL under `base`, its v2 requirements, and what it is.
pub fn item(route: &Route, base: &str, updated_ms: i64) -> Option<Value> {
    let p = route.pricing.as_ref()?;
    let method = match &route.method {
        crate::routes::MethodMatch::Any => "GET".to_string(),
        crate::routes::MethodMatch::Only(m) => m.to_string(),
    };
    Some(json!({
        "resource": format!("{base}{}", route.pattern),
        "type": "http",
        "x402Version": 2,
        "accepts": p.offers.iter().map(|o| o.to_v2()).collect::<Vec<_>>(),
        "lastUpdated": crate::clock::rfc3339(updated_ms / 1000),
        "metadata": {"method": method, "description": p.description, "mimeType": p.mime_type},
    }))
}

/// The `/.well-known/x402` document of a tenant's routes under `base` (every priced route but those
/// marked `discoverable = false`): the `version` / `resources` shape catalogs read, with the items.
pub fn well_known(routes: &[Route], base: &str, updated_ms: i64) -> Value {
    let items: Vec<Value> = routes
        .iter()
        .filter(|r| r.discoverable != Some(false))
        .filter_map(|r| item(r, base, updated_ms))
        .collect();
    let resources: Vec<&Value> = items.iter().map(|i| &i["resource"]).collect();
    json!({"version": 1, "x402Version": 2, "resources": resources, "items": items})
}

/// The published routes of every active hosted tenant, or of the drop-in tenant: rebuilt at most
/// every `ttl` from the database (not on each call: a catalog may be read often and tenants are many).
pub struct Catalog {
    ttl: Duration,
    built: Mutex<Option<(Instant, Arc<Vec<Value>>)>>,
    rebuilding: tokio::sync::Mutex<()>,
}

impl Catalog {
    pub fn new(ttl: Duration) -> Catalog {
        Catalog {
            ttl,
            built: Mutex::new(None),
            rebuilding: tokio::sync::Mutex::new(()),
        }
    }

    /// The items, newest build.
    pub async fn items(&self, app: &crate::app::App) -> Result<Arc<Vec<Value>>, crate::store::StoreError> {
        let fresh = |b: &Option<(Instant, Arc<Vec<Value>>)>| {
            b.as_ref()
                .filter(|(at, _)| at.elapsed() < self.ttl)
                .map(|(_, v)| v.clone())
        };
        if let Some(v) = fresh(&self.built.lock().expect("catalog lock")) {
            return Ok(v);
        }
        // One rebuild at a time; the others wait for it and take its result.
        let _one = self.rebuilding.lock().await;
        if let Some(v) = fresh(&self.built.lock().expect("catalog lock")) {
            return Ok(v);
        }
        let items = Arc::new(build(app).await?);
        *self.built.lock().expect("catalog lock") = Some((Instant::now(), items.clone()));
        Ok(items)
    }
}

async fn build(app: &crate::app::App) -> Result<Vec<Value>, crate::store::StoreError> {
    let settings = &app.settings;
    let now = app.payments.clock.now_ms() as i64;
    if let Some(t) = app.directory.single() {
        let base = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", settings.listen));
        return Ok(t
            .routes
            .iter()
            .filter(|r| r.discoverable == Some(true))
            .filter_map(|r| item(r, &base, now))
            .collect());
    }
    hosted_items(&app.payments.store, settings).await
}

/// Pages through the tenants; only rows whose routes mention `discoverable` are parsed.
async fn hosted_items(store: &Store, settings: &Settings) -> Result<Vec<Value>, crate::store::StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.tenants(after.as_deref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for row in &page {
            if !row.active() || !row.routes.contains("discoverable") {
                continue;
            }
            let Some(plan) = settings.plans.get(&row.plan) else {
                continue;
            };
            let Ok(specs) = crate::tenancy::build::parse_routes(&row.routes) else {
                continue;
            };
            let published: Vec<_> = specs.into_iter().filter(|s| s.discoverable == Some(true)).collect();
            if published.is_empty() {
                continue;
            }
            let pay_to = crate::config::PayTo {
                evm: row.pay_to_evm.as_deref().and_then(|a| a.parse().ok()),
                solana: row.pay_to_solana.clone(),
            };
            let networks: Vec<_> = plan.enabled(&settings.networks).into_iter().cloned().collect();
            let mut problems = Vec::new();
            let (routes, _, _) = crate::config::build_routes(
                published,
                None,
                &networks,
                &pay_to,
                &settings.rules,
                true,
                &mut problems,
            );
            let base = tenant_base(settings, &row.slug);
            out.extend(routes.iter().filter_map(|r| item(r, &base, row.updated_at)));
        }
    }
    Ok(out)
}

/// Where a hosted tenant's routes are reached from outside.
pub fn tenant_base(settings: &Settings, slug: &str) -> String {
    match settings.hosted.as_ref().and_then(|h| h.base_domain.as_deref()) {
        Some(domain) => format!("https://{slug}.{domain}"),
        None => format!(
            "{}/t/{slug}",
            settings
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", settings.listen))
        ),
    }
}
