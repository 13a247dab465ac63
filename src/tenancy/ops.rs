//! What the operator and tenants do to tenants and keys, shared by the management API and the CLI.

use super::{keys, Plans};
use crate::clock::month_bounds;
use crate::directory::valid_slug;
use crate::store::{KeyRow, Store, StoreError, TenantChange, TenantRow};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A field is missing or malformed (the message names it).
    #[error("{0}")]
    Invalid(String),
    #[error("slug '{0}' is taken; choose another")]
    SlugTaken(String),
    #[error("no {0} with that id")]
    NotFound(&'static str),
    #[error(transparent)]
    Db(#[from] StoreError),
}

/// A tenant to create.
pub struct NewTenant {
    pub email: String,
    pub tier: String,
    pub name: Option<String>,
    pub slug: Option<String>,
    /// A live key (`x402_live_`) or a test one.
    pub live: bool,
}

/// Creates a tenant on its plan with its first key; the key is returned once, never stored.
pub async fn create_tenant(
    store: &Store,
    plans: &Plans,
    t: NewTenant,
    now_ms: i64,
) -> Result<(TenantRow, String), OpsError> {
    let email = t.email.trim().to_string();
    if email.len() > 254 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(OpsError::Invalid(format!("email: '{email}' is not an email address")));
    }
    let plan = plans
        .get(&t.tier)
        .ok_or_else(|| OpsError::Invalid(format!("tier: '{}' is not one of {}", t.tier, plans.names().join(", "))))?;
    let name = t
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_string());
    if name.len() > 200 {
        return Err(OpsError::Invalid("name: at most 200 characters".into()));
    }
    let explicit = t.slug.is_some();
    let base = match t.slug {
        Some(s) if valid_slug(&s) => s,
        Some(s) => {
            return Err(OpsError::Invalid(format!(
                "slug: '{s}' is not 1-63 lower-case letters, digits and inner hyphens"
            )))
        }
        None => slugify(&name),
    };
    let (period, _) = month_bounds(now_ms / 1000);
    let mut row = TenantRow {
        id: keys::id("tn"),
        slug: base.clone(),
        name,
        email,
        plan: plan.name.clone(),
        status: "active".into(),
        upstream: None,
        pay_to_evm: None,
        pay_to_solana: None,
        routes: "[]".into(),
        period_start: period,
        used: 0,
        created_at: now_ms,
        updated_at: now_ms,
    };
    let mut tries = 0;
    while !store.insert_tenant(&row).await? {
        tries += 1;
        if explicit || tries > 5 {
            return Err(OpsError::SlugTaken(row.slug));
        }
        // Derived names collide: a short random suffix.
        let suffix = keys::id("x")[2..8].to_ascii_lowercase();
        row.slug = format!("{}-{suffix}", &base[..base.len().min(50)]);
    }
    let (_, key) = create_key(store, &row.id, "default", &[], t.live, now_ms).await?;
    tracing::info!(tenant = %row.id, slug = %row.slug, tier = %row.plan, "tenant created");
    Ok((row, key))
}

/// A new key for a tenant: its stored row and the key itself (shown once).
pub async fn create_key(
    store: &Store,
    tenant: &str,
    name: &str,
    scopes: &[String],
    live: bool,
    now_ms: i64,
) -> Result<(KeyRow, String), OpsError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(OpsError::Invalid("name: give 1 to 100 characters".into()));
    }
    let scopes = keys::parse_scopes(scopes).map_err(|e| OpsError::Invalid(format!("scopes: {e}")))?;
    let new = keys::generate(live);
    let row = KeyRow {
        hash: new.hash,
        id: keys::id("key"),
        tenant_id: tenant.to_string(),
        name: name.to_string(),
        prefix: new.prefix,
        scopes: scopes.join(","),
        created_at: now_ms,
        last_used_at: None,
        revoked_at: None,
    };
    store.insert_key(&row).await?;
    Ok((row, new.key))
}

/// Changes a tenant's plan or status (the operator's levers); the changed row.
pub async fn change_tenant(
    store: &Store,
    plans: &Plans,
    id: &str,
    change: TenantChange,
    now_ms: i64,
) -> Result<TenantRow, OpsError> {
    if let Some(p) = &change.plan {
        if plans.get(p).is_none() {
            return Err(OpsError::Invalid(format!(
                "tier: '{p}' is not one of {}",
                plans.names().join(", ")
            )));
        }
    }
    if !store.update_tenant(id, &change, now_ms).await? {
        return Err(OpsError::NotFound("tenant"));
    }
    let t = store.tenant(id).await?.ok_or(OpsError::NotFound("tenant"))?;
    tracing::info!(tenant = %t.id, plan = %t.plan, status = %t.status, "tenant changed by the operator");
    Ok(t)
}

/// A slug from a name: lower-case letters and digits, other runs as one hyphen.
pub fn slugify(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    let s: String = s.trim_matches('-').chars().take(40).collect();
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() {
        "tenant".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::slugify;

    #[test]
    fn slugs_from_names() {
        assert_eq!(slugify("Acme Weather, Inc."), "acme-weather-inc");
        assert_eq!(slugify("ÆØÅ"), "tenant");
        assert_eq!(slugify("--x--"), "x");
    }
}
