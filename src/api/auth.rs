//! Who is calling: a tenant's API key (`Authorization: Bearer x402_…`), or the operator's admin key
//! (`X-Admin-Key`, compared in constant time).
//!
//! Keys are looked up by their SHA-256 and cached for `hosted.key_cache_secs`, so that a steady
//! stream of requests makes no database query for its key. A revocation is seen at once by the
//! gateway that made it (it forgets the key) and within that bound by the others. `last_used_at`
//! is written at most once a minute per key, in the background.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};

use super::{Api, ApiError};
use crate::store::{KeyRow, Store, StoreError, TenantRow};
use crate::tenancy::keys;

/// How often `last_used_at` is written per key, at most.
const TOUCH_EVERY_MS: i64 = 60_000;

/// A key the cache knows.
pub struct Known {
    pub row: KeyRow,
    touched: AtomicI64,
}

impl Known {
    /// Whether the key carries `scope` (a key with no scopes carries them all).
    pub fn allows(&self, scope: &str) -> bool {
        self.row.scopes.is_empty() || self.row.scopes.split(',').any(|s| s == scope)
    }
}

/// The key cache.
pub struct Keys {
    store: Store,
    cache: moka::future::Cache<String, Option<Arc<Known>>>,
    lookups: AtomicI64,
}

impl Keys {
    pub fn new(store: Store, bound_secs: u64) -> Keys {
        Keys {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(Duration::from_secs(bound_secs.max(1)))
                .build(),
            lookups: AtomicI64::new(0),
        }
    }

    /// The key with this hash, from the cache or the database (unknown keys are cached too, so
    /// that a flood of made-up keys costs one query each per bound, not one per request).
    /// Concurrent misses for one key wait for a single query.
    async fn lookup(&self, hash: &str) -> Result<Option<Arc<Known>>, StoreError> {
        let m = &crate::metrics::METRICS;
        let missed = std::sync::atomic::AtomicBool::new(false);
        let found = self
            .cache
            .try_get_with_by_ref(hash, async {
                missed.store(true, Ordering::Relaxed);
                self.lookups.fetch_add(1, Ordering::Relaxed);
                let row = self.store.key_by_hash(hash).await?;
                Ok::<_, StoreError>(row.map(|row| {
                    Arc::new(Known {
                        touched: AtomicI64::new(row.last_used_at.unwrap_or(0)),
                        row,
                    })
                }))
            })
            .await
            .map_err(|e: Arc<StoreError>| match Arc::try_unwrap(e) {
                Ok(e) => e,
                Err(shared) => StoreError::Shared(shared.to_string()),
            });
        if m.enabled() {
            if missed.load(Ordering::Relaxed) {
                m.key_cache_miss.inc();
            } else {
                m.key_cache_hit.inc();
            }
        }
        found
    }

    /// Forgets a key here at once (after a revocation).
    pub async fn forget(&self, hash: &str) {
        self.cache.invalidate(hash).await;
    }

    /// Database lookups made for keys so far (the benchmark counts them).
    pub fn lookups(&self) -> i64 {
        self.lookups.load(Ordering::Relaxed)
    }

    fn touch(&self, k: &Arc<Known>, now_ms: i64) {
        let last = k.touched.load(Ordering::Relaxed);
        if now_ms - last < TOUCH_EVERY_MS
            || k.touched
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (store, hash) = (self.store.clone(), k.row.hash.clone());
        tokio::spawn(async move {
            if let Err(e) = store.touch_key(&hash, now_ms).await {
                tracing::debug!(error = %e, "could not record a key's last use");
            }
        });
    }
}

/// A tenant's authenticated call.
pub struct Caller {
    /// The key used; `None` for the drop-in gateway's facilitator keys.
    pub key: Option<Arc<Known>>,
    pub tenant: TenantRow,
}

impl Api {
    /// The tenant behind the bearer key, which must carry `scope`; a suspended tenant is refused.
    pub async fn caller(&self, headers: &HeaderMap, scope: &str) -> Result<Caller, ApiError> {
        let caller = self.caller_any(headers, scope).await?;
        if !caller.tenant.active() {
            return Err(suspended());
        }
        Ok(caller)
    }

    /// As [`Self::caller`], suspended tenants included.
    pub async fn caller_any(&self, headers: &HeaderMap, scope: &str) -> Result<Caller, ApiError> {
        let (known, tenant_id) = self.key_of(headers, scope).await?;
        let tenant = self.tenant_row(&tenant_id).await?;
        self.limit_key(&tenant, &known.row.id).await?;
        Ok(Caller {
            key: Some(known),
            tenant,
        })
    }

    async fn tenant_row(&self, id: &str) -> Result<TenantRow, ApiError> {
        self.app()
            .payments
            .store
            .tenant(id)
            .await
            .map_err(ApiError::db)?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))
    }

    /// The bearer key (which must carry `scope`) and its tenant's id.
    async fn key_of(&self, headers: &HeaderMap, scope: &str) -> Result<(Arc<Known>, String), ApiError> {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "missing API key; send 'Authorization: Bearer x402_live_…'",
            ));
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|k| keys::well_formed(k))
            .ok_or_else(|| ApiError::unauthorized("malformed API key; send 'Authorization: Bearer x402_live_…'"))?;
        let known = self
            .keys
            .lookup(&keys::hash(key))
            .await
            .map_err(ApiError::db)?
            .filter(|k| k.row.revoked_at.is_none())
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
        if !known.allows(scope) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "INSUFFICIENT_SCOPE",
                format!("this key lacks the '{scope}' scope; create a key with it"),
            ));
        }
        self.keys.touch(&known, self.now_ms());
        let id = known.row.tenant_id.clone();
        Ok((known, id))
    }

    /// Whose payments a facilitator call settles: in hosted mode the tenant behind the bearer key
    /// (with `scope`); in the drop-in mode the one configured tenant, for the admin key or a key
    /// whose SHA-256 is in `[api] facilitator_keys`.
    pub async fn payee(&self, headers: &HeaderMap, scope: &str) -> Result<Caller, ApiError> {
        let crate::directory::Directory::One(t) = &self.app().directory else {
            let (known, tenant_id) = self.key_of(headers, scope).await?;
            let tenant = match self.settling.get(&tenant_id) {
                Some(t) => t,
                None => {
                    let t = self.tenant_row(&tenant_id).await?;
                    self.settling.insert(tenant_id, t.clone());
                    t
                }
            };
            if !tenant.active() {
                return Err(suspended());
            }
            self.limit_key(&tenant, &known.row.id).await?;
            return Ok(Caller {
                key: Some(known),
                tenant,
            });
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("missing key; send 'Authorization: Bearer <key>'"))?;
        let admin = self
            .admin_key
            .as_ref()
            .is_some_and(|k| constant_time_eq(given.as_bytes(), k.as_bytes()));
        let hash = keys::hash(given);
        let listed = self
            .app()
            .settings
            .facilitator_keys
            .iter()
            .any(|h| constant_time_eq(h.as_bytes(), hash.as_bytes()));
        if !(admin || listed) {
            return Err(ApiError::unauthorized(
                "unknown key; use TOLLGATE_ADMIN_KEY or a key whose SHA-256 is in [api] facilitator_keys",
            ));
        }
        if let Some(limits) = &self.app().settings.rate_limits {
            // Keyed by a prefix of the key's digest: enough to tell keys apart, nothing usable.
            limits
                .check(crate::ratelimit::Scope::Key, &t.id, &hash[..16])
                .await
                .map_err(|d| ApiError::rate_limited(&d))?;
        }
        let now = self.now_ms();
        Ok(Caller {
            key: None,
            tenant: TenantRow {
                id: t.id.clone(),
                slug: t.id.clone(),
                name: t.id.clone(),
                email: String::new(),
                plan: DROP_IN_PLAN.into(),
                status: "active".into(),
                upstream: None,
                pay_to_evm: Some(t.pay_to.to_checksum(None)),
                pay_to_solana: None,
                routes: "[]".into(),
                period_start: 0,
                used: 0,
                created_at: now,
                updated_at: now,
            },
        })
    }

    /// The per-key rate limit of the tenant's plan, for the key with id `key_id`.
    async fn limit_key(&self, tenant: &TenantRow, key_id: &str) -> Result<(), ApiError> {
        let plan = super::contract::tenant_plan(self, tenant)?;
        match &plan.limits {
            Some(l) => l
                .check(crate::ratelimit::Scope::Key, &tenant.id, key_id)
                .await
                .map_err(|d| ApiError::rate_limited(&d)),
            None => Ok(()),
        }
    }

    /// The operator: `X-Admin-Key` equal to `TOLLGATE_ADMIN_KEY`.
    pub fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.admin_key else {
            return Err(ApiError::unauthorized(
                "admin endpoints are disabled: TOLLGATE_ADMIN_KEY is not set on this gateway",
            ));
        };
        let given = headers.get("x-admin-key").map(|v| v.as_bytes()).unwrap_or_default();
        if !constant_time_eq(given, expected.as_bytes()) {
            return Err(ApiError::unauthorized("missing or wrong X-Admin-Key"));
        }
        Ok(())
    }
}

fn suspended() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "TENANT_SUSPENDED",
        "this tenant is suspended; contact the operator",
    )
}

/// The plan of the drop-in gateway's one tenant: every configured network, not metered.
pub const DROP_IN_PLAN: &str = "(drop-in)";
pub fn drop_in_plan(settings: &crate::config::Settings) -> crate::tenancy::Plan {
    crate::tenancy::Plan {
        name: DROP_IN_PLAN.into(),
        verifications: -1,
        chains: vec!["*".into()],
        price_usd: 0,
        gas_per_month: -1,
        limits: settings.rate_limits.clone(),
    }
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Compare digests, so that the time does not depend on where the inputs differ or on their
    // lengths either.
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"abcd"));
        assert!(!super::constant_time_eq(b"", b"x"));
    }
}
