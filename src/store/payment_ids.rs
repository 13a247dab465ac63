//! Ids of the payment-identifier extension ([`crate::x402::identifier`]): who holds an id, what
//! was paid under it, and the final answer to give a retry.

use sqlx::Row;

use super::{Store, StoreError};

/// What a request may do with an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdClaim {
    /// New (or free again): this request holds it until it finishes or its lease ends.
    Held,
    /// Answered before, for the same payload: the stored answer.
    Answered(String),
    /// Used for another payload: 409.
    Conflict,
    /// Another request holds it now (the same payload, in flight): 409, try again shortly.
    InProgress,
}

impl Store {
    /// Takes `id` for `payload_hash`, or says why not. Ids older than `expired_before` (unix ms) are
    /// forgotten and may be used afresh.
    pub async fn claim_payment_id(
        &self,
        tenant: &str,
        id: &str,
        payload_hash: &str,
        now_ms: i64,
        lease_ms: i64,
        expired_before: i64,
    ) -> Result<IdClaim, StoreError> {
        let until = now_ms + lease_ms;
        for _ in 0..3 {
            let done = sqlx::query(
                "INSERT INTO payment_ids (tenant, id, payload_hash, answer, lease_until, created_ms) \
                 VALUES ($1, $2, $3, NULL, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(id)
            .bind(payload_hash)
            .bind(until)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(IdClaim::Held);
            }
            let Some(r) = sqlx::query(
                "SELECT payload_hash, answer, lease_until, created_ms FROM payment_ids WHERE tenant = $1 AND id = $2",
            )
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            else {
                continue; // deleted meanwhile: insert again
            };
            let hash: String = r.try_get("payload_hash")?;
            let answer: Option<String> = r.try_get("answer")?;
            let lease: i64 = r.try_get("lease_until")?;
            let created: i64 = r.try_get("created_ms")?;
            if created < expired_before {
                sqlx::query("DELETE FROM payment_ids WHERE tenant = $1 AND id = $2 AND created_ms = $3")
                    .bind(tenant)
                    .bind(id)
                    .bind(created)
                    .execute(&self.pool)
                    .await?;
                continue;
            }
            if hash != payload_hash {
                return Ok(IdClaim::Conflict);
            }
            if let Some(a) = answer {
                return Ok(IdClaim::Answered(a));
            }
            if lease > now_ms {
                return Ok(IdClaim::InProgress);
            }
            // Free again (its last holder ended without a final answer, or died): take it, once.
            let taken = sqlx::query(
                "UPDATE payment_ids SET lease_until = $3 \
                 WHERE tenant = $1 AND id = $2 AND lease_until = $4 AND answer IS NULL",
            )
            .bind(tenant)
            .bind(id)
            .bind(until)
            .bind(lease)
            .execute(&self.pool)
            .await?;
            return Ok(if taken.rows_affected() == 1 {
                IdClaim::Held
            } else {
                IdClaim::InProgress
            });
        }
        Ok(IdClaim::InProgress)
    }

    /// Ends a hold: `Some(answer)` is stored for retries; `None` leaves the id to the same payload
    /// (its outcome is not final yet: a pending settlement).
    pub async fn finish_payment_id(&self, tenant: &str, id: &str, answer: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE payment_ids SET answer = $3, lease_until = 0 WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .bind(answer)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes ids created before `before` (unix ms): their answers are no longer kept.
    pub async fn purge_payment_ids(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM payment_ids WHERE created_ms < $1 AND lease_until < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Frees an id entirely: nothing was charged under it, so the client may use it again, with
    /// this payload or another.
    pub async fn forget_payment_id(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM payment_ids WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
