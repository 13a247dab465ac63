//! Proof verifications a tenant asked for, and the transactions they consumed.

use sqlx::Row;

use super::{Store, StoreError};

/// One verification, as listed to its tenant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerificationRow {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    pub at_ms: i64,
    /// `proof` (a transaction already on chain) or `x402` (a signed payment checked).
    pub kind: String,
    pub chain: String,
    pub tx_hash: Option<String>,
    pub success: bool,
    pub error_code: Option<String>,
    /// Atomic units.
    pub amount: Option<String>,
    pub payer: Option<String>,
    pub confirmations: Option<i64>,
    pub risk_score: Option<i32>,
}

/// Filters of a listing (all optional), and its page.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub chain: Option<String>,
    /// `success` / `failure` for verifications; a payment outcome for payments.
    pub outcome: Option<String>,
    /// Keyset cursor: the `(at_ms, id)` of the last row of the previous page.
    pub after: Option<(i64, String)>,
    pub limit: u32,
}

/// Counts for a usage breakdown: (day as `YYYY-MM-DD`, network, outcome, count).
pub type Breakdown = Vec<(String, String, String, i64)>;

fn row(r: &sqlx::any::AnyRow) -> Result<VerificationRow, sqlx::Error> {
    Ok(VerificationRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        at_ms: r.try_get("at_ms")?,
        kind: r.try_get("kind")?,
        chain: r.try_get("chain")?,
        tx_hash: r.try_get("tx_hash")?,
        success: r.try_get::<i32, _>("success")? != 0,
        error_code: r.try_get("error_code")?,
        amount: r.try_get("amount")?,
        payer: r.try_get("payer")?,
        confirmations: r.try_get("confirmations")?,
        risk_score: r.try_get("risk_score")?,
    })
}

impl Store {
    /// Consumes a transaction for a tenant. `Err(first_used_ms)` when it was consumed already.
    pub async fn consume_tx(
        &self,
        tenant: &str,
        chain: &str,
        tx: &str,
        now_ms: i64,
    ) -> Result<Result<(), i64>, StoreError> {
        let done = sqlx::query(
            "INSERT INTO consumed_txs (tenant_id, chain, tx_hash, used_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(chain)
        .bind(tx)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        let r = sqlx::query("SELECT used_at FROM consumed_txs WHERE tenant_id = $1 AND chain = $2 AND tx_hash = $3")
            .bind(tenant)
            .bind(chain)
            .bind(tx)
            .fetch_one(&self.pool)
            .await?;
        Ok(Err(r.try_get("used_at")?))
    }

    /// Whether this payer has paid this tenant before (a proof consumed with it as payer).
    pub async fn payer_seen(&self, tenant: &str, payer: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "SELECT 1 AS one FROM verifications WHERE tenant_id = $1 AND payer = $2 AND success = 1 LIMIT 1",
        )
        .bind(tenant)
        .bind(payer)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.is_some())
    }

    pub async fn insert_verification(&self, v: &VerificationRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO verifications (id, tenant_id, at_ms, kind, chain, tx_hash, success, error_code, amount, payer, confirmations, risk_score) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&v.id)
        .bind(&v.tenant_id)
        .bind(v.at_ms)
        .bind(&v.kind)
        .bind(&v.chain)
        .bind(&v.tx_hash)
        .bind(v.success as i32)
        .bind(&v.error_code)
        .bind(&v.amount)
        .bind(&v.payer)
        .bind(v.confirmations)
        .bind(v.risk_score)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A tenant's verifications, newest first, filtered and paged.
    pub async fn verifications(&self, tenant: &str, l: &Listing) -> Result<Vec<VerificationRow>, StoreError> {
        let (after_at, after_id) = l.after.clone().unwrap_or((i64::MAX, String::new()));
        let success = match l.outcome.as_deref() {
            Some("success") => 1,
            Some("failure") => 0,
            _ => -1,
        };
        let rows = sqlx::query(
            "SELECT id, tenant_id, at_ms, kind, chain, tx_hash, success, error_code, amount, payer, confirmations, risk_score \
             FROM verifications WHERE tenant_id = $1 AND at_ms >= $2 AND at_ms < $3 \
             AND ($4 = '' OR chain = $4) AND ($5 < 0 OR success = $5) \
             AND (at_ms < $6 OR (at_ms = $6 AND ($7 = '' OR id < $7))) \
             ORDER BY at_ms DESC, id DESC LIMIT $8",
        )
        .bind(tenant)
        .bind(l.since_ms.unwrap_or(0))
        .bind(l.until_ms.unwrap_or(i64::MAX))
        .bind(l.chain.clone().unwrap_or_default())
        .bind(success)
        .bind(after_at)
        .bind(after_id)
        .bind(l.limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Verifications of a tenant since `since_ms`, by day, chain and success.
    pub async fn verification_breakdown(&self, tenant: &str, since_ms: i64) -> Result<Breakdown, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms / 86400000 AS day, chain, success, COUNT(*) AS n FROM verifications \
             WHERE tenant_id = $1 AND at_ms >= $2 GROUP BY at_ms / 86400000, chain, success ORDER BY 1, 2, 3",
        )
        .bind(tenant)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let day: i64 = r.try_get("day")?;
                let ok: i32 = r.try_get("success")?;
                Ok((
                    crate::clock::civil_day(day),
                    r.try_get("chain")?,
                    if ok != 0 { "success" } else { "failure" }.to_string(),
                    r.try_get("n")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}
