//! API keys, stored and looked up only by the SHA-256 of the whole key.

use sqlx::Row;

use super::{Store, StoreError};

/// A key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub hash: String,
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "hash, id, tenant_id, name, prefix, scopes, created_at, last_used_at, revoked_at";

fn row(r: &sqlx::any::AnyRow) -> Result<KeyRow, sqlx::Error> {
    Ok(KeyRow {
        hash: r.try_get("hash")?,
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        scopes: r.try_get("scopes")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    pub async fn insert_key(&self, k: &KeyRow) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)"
        ))
        .bind(&k.hash)
        .bind(&k.id)
        .bind(&k.tenant_id)
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.scopes)
        .bind(k.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRow>, StoreError> {
        let r = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE hash = $1"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(row).transpose()?)
    }

    pub async fn keys_of(&self, tenant: &str) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Revokes a tenant's key by id; the revoked key's hash, or `None` when the tenant has no such
    /// live key.
    pub async fn revoke_key(&self, tenant: &str, id: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
        let r = sqlx::query(
            "UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING hash",
        )
        .bind(tenant)
        .bind(id)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.map(|r| r.try_get("hash")).transpose()?)
    }

    /// Records when a key was last used (callers write at most about once a minute per key).
    pub async fn touch_key(&self, hash: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE hash = $1")
            .bind(hash)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
