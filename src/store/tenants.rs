//! Hosted tenants and their quota counters.

use sqlx::Row;

use super::{Store, StoreError};

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub email: String,
    pub plan: String,
    /// `active` or `suspended`.
    pub status: String,
    pub upstream: Option<String>,
    pub pay_to_evm: Option<String>,
    pub pay_to_solana: Option<String>,
    /// JSON array of route specs (the drop-in file's `[[routes]]` shape).
    pub routes: String,
    /// Start of the period `used` counts (unix seconds).
    pub period_start: i64,
    pub used: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TenantRow {
    /// The tenant's payee on a network of this family.
    pub fn pay_to(&self, family: crate::x402::Family) -> Option<&str> {
        match family {
            crate::x402::Family::Evm => self.pay_to_evm.as_deref(),
            crate::x402::Family::Solana => self.pay_to_solana.as_deref(),
        }
    }

    pub fn active(&self) -> bool {
        self.status == "active"
    }
}

/// What a tenant's settings change sets (only the fields given).
#[derive(Debug, Default, Clone)]
pub struct TenantChange {
    pub name: Option<String>,
    pub email: Option<String>,
    pub plan: Option<String>,
    pub status: Option<String>,
    pub upstream: Option<Option<String>>,
    pub pay_to_evm: Option<Option<String>>,
    pub pay_to_solana: Option<Option<String>>,
    pub routes: Option<String>,
}

/// The answer of a quota count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Counted; the tenant is within its allowance.
    Yes,
    /// Not counted: the allowance of this period is used up.
    OverQuota,
    /// Not counted: the settlement gas of this period is used up.
    OverGasBudget,
}

const COLUMNS: &str = "id, slug, name, email, plan, status, upstream, pay_to_evm, pay_to_solana, routes, period_start, used, created_at, updated_at";

fn row(r: &sqlx::any::AnyRow) -> Result<TenantRow, sqlx::Error> {
    Ok(TenantRow {
        id: r.try_get("id")?,
        slug: r.try_get("slug")?,
        name: r.try_get("name")?,
        email: r.try_get("email")?,
        plan: r.try_get("plan")?,
        status: r.try_get("status")?,
        upstream: r.try_get("upstream")?,
        pay_to_evm: r.try_get("pay_to_evm")?,
        pay_to_solana: r.try_get("pay_to_solana")?,
        routes: r.try_get("routes")?,
        period_start: r.try_get("period_start")?,
        used: r.try_get("used")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// Inserts a new tenant; `false` when its slug is taken.
    pub async fn insert_tenant(&self, t: &TenantRow) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "INSERT INTO tenants ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT DO NOTHING"
        ))
        .bind(&t.id)
        .bind(&t.slug)
        .bind(&t.name)
        .bind(&t.email)
        .bind(&t.plan)
        .bind(&t.status)
        .bind(&t.upstream)
        .bind(&t.pay_to_evm)
        .bind(&t.pay_to_solana)
        .bind(&t.routes)
        .bind(t.period_start)
        .bind(t.used)
        .bind(t.created_at)
        .bind(t.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRow>, StoreError> {
        let r = sqlx::query(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(row).transpose()?)
    }

    pub async fn tenant_by_slug(&self, slug: &str) -> Result<Option<TenantRow>, StoreError> {
        let r = sqlx::query(&format!("SELECT {COLUMNS} FROM tenants WHERE slug = $1"))
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(row).transpose()?)
    }

    /// Tenants in creation order, `limit` after the id `after` (keyset pagination).
    pub async fn tenants(&self, after: Option<&str>, limit: u32) -> Result<Vec<TenantRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Applies a change; `false` when there is no such tenant.
    pub async fn update_tenant(&self, id: &str, c: &TenantChange, now_ms: i64) -> Result<bool, StoreError> {
        let Some(mut t) = self.tenant(id).await? else {
            return Ok(false);
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &c.$f { t.$f = v.clone(); } )* };
        }
        set!(name, email, plan, status, upstream, pay_to_evm, pay_to_solana, routes);
        // Every column written from one read: a concurrent change of other fields could be lost, so
        // the counter columns are left out of it (quota counting never goes through here).
        let done = sqlx::query(
            "UPDATE tenants SET name = $2, email = $3, plan = $4, status = $5, upstream = $6, pay_to_evm = $7, \
             pay_to_solana = $8, routes = $9, updated_at = $10 WHERE id = $1",
        )
        .bind(id)
        .bind(&t.name)
        .bind(&t.email)
        .bind(&t.plan)
        .bind(&t.status)
        .bind(&t.upstream)
        .bind(&t.pay_to_evm)
        .bind(&t.pay_to_solana)
        .bind(&t.routes)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counts one verification against the tenant's allowance of the period that started at
    /// `period` (unix seconds), in one conditional statement: the row's own lock decides between
    /// concurrent counts, on one gateway or many, so the count never passes `limit` (-1: unlimited).
    /// A count in a later period than the stored one replaces the counter (the allowance refills).
    ///
    /// The same statement checks the tenant's settlement gas of the period against `gas_budget`
    /// (-1: unlimited); a new period starts it at 0.
    pub async fn count_use(
        &self,
        tenant: &str,
        limit: i64,
        period: i64,
        gas_budget: i64,
    ) -> Result<Counted, StoreError> {
        let done = sqlx::query(
            "UPDATE tenants SET \
               used = CASE WHEN period_start < $3 THEN 1 ELSE used + 1 END, \
               gas_used = CASE WHEN period_start < $3 THEN 0 ELSE gas_used END, \
               period_start = CASE WHEN period_start < $3 THEN $3 ELSE period_start END \
             WHERE id = $1 AND ($2 < 0 OR period_start < $3 OR used < $2) \
               AND ($4 < 0 OR period_start < $3 OR gas_used < $4)",
        )
        .bind(tenant)
        .bind(limit)
        .bind(period)
        .bind(gas_budget)
        .execute(&self.counters)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Counted::Yes);
        }
        // Refused: say which allowance is used up (the verifications first, when both are).
        let row = sqlx::query("SELECT used, gas_used FROM tenants WHERE id = $1 AND period_start = $2")
            .bind(tenant)
            .bind(period)
            .fetch_optional(&self.counters)
            .await?;
        let (used, gas): (i64, i64) = match &row {
            Some(r) => (r.try_get("used")?, r.try_get("gas_used")?),
            None => return Ok(Counted::OverQuota),
        };
        Ok(if limit >= 0 && used >= limit {
            Counted::OverQuota
        } else if gas_budget >= 0 && gas >= gas_budget {
            Counted::OverGasBudget
        } else {
            Counted::OverQuota
        })
    }

    /// The `limit` tenants that used the most of the period that started at `period`: (id, plan,
    /// used), most first (for `tollgate_quota_used`).
    pub async fn top_usage(&self, period: i64, limit: i64) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, plan, used FROM tenants WHERE period_start = $1 AND used > 0 ORDER BY used DESC LIMIT $2",
        )
        .bind(period)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("plan")?, r.try_get("used")?)))
            .collect()
    }

    /// Adds a settlement's gas to the tenant's use of the period that started at `period`.
    pub async fn add_gas(&self, tenant: &str, period: i64, gas: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE tenants SET gas_used = gas_used + $3 WHERE id = $1 AND period_start = $2")
            .bind(tenant)
            .bind(period)
            .bind(gas as i64)
            .execute(&self.counters)
            .await?;
        Ok(())
    }

    /// Gives back one count taken in `period` (a request counted and then not carried out).
    pub async fn uncount_use(&self, tenant: &str, period: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE tenants SET used = used - 1 WHERE id = $1 AND period_start = $2 AND used > 0")
            .bind(tenant)
            .bind(period)
            .execute(&self.counters)
            .await?;
        Ok(())
    }
}
