//! The payment ledger: claim an authorization once, then record how it ended.

use sqlx::Row;

use super::{Store, StoreError};
use crate::chains::ReplayKey;

/// Where a claimed payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    /// Verified and held by one request; not on chain yet.
    Claimed,
    /// Sent, but not confirmed yet (receipt timeout, or the node went away mid-send).
    Pending,
    /// On chain.
    Settled,
    /// Answered before its settlement, and its transfer then failed (the payer moved its funds):
    /// owed by the payer, retried by reconciliation while its authorization is valid.
    Failed,
    /// Answered before its settlement and never settled before its authorization expired: a loss.
    Lost,
}

impl PaymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Claimed => "claimed",
            PaymentState::Pending => "pending",
            PaymentState::Settled => "settled",
            PaymentState::Failed => "failed",
            PaymentState::Lost => "lost",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "claimed" => Some(PaymentState::Claimed),
            "pending" => Some(PaymentState::Pending),
            "settled" => Some(PaymentState::Settled),
            "failed" => Some(PaymentState::Failed),
            "lost" => Some(PaymentState::Lost),
            _ => None,
        }
    }
}

/// What is written when a request claims an authorization.
#[derive(Debug, Clone)]
pub struct NewClaim<'a> {
    pub key: &'a ReplayKey,
    pub tenant: &'a str,
    pub route: &'a str,
    pub pay_to: &'a str,
    pub amount: String,
    pub payload: String,
    pub valid_before: u64,
    pub now_ms: u64,
}

/// A ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRow {
    pub key: ReplayKey,
    pub tenant: String,
    pub route: String,
    pub amount: String,
    pub state: PaymentState,
    pub tx_hash: Option<String>,
    pub payload: String,
    pub valid_before: u64,
    pub claimed_at: u64,
    pub updated_at: u64,
    pub delivery: Delivery,
}

/// Whether a payment's request was served (see the migration that added it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A request holds it, or held it and was served.
    Held,
    /// Charged, or maybe charged, and never served: the same signed payment may collect it.
    Owed,
    /// Served while its settlement was still pending.
    Served,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Held => "held",
            Delivery::Owed => "owed",
            Delivery::Served => "served",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "held" => Some(Delivery::Held),
            "owed" => Some(Delivery::Owed),
            "served" => Some(Delivery::Served),
            _ => None,
        }
    }
}

/// The WHERE clause of a query on one payment; the key binds as $1..$4 ([`keyed`]).
macro_rules! key_where {
    () => {
        "network = $1 AND asset = $2 AND payer = $3 AND nonce = $4"
    };
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// A query on one payment, with its key bound as $1..$4.
fn keyed<'q>(sql: &'q str, key: &'q ReplayKey) -> AnyQuery<'q> {
    sqlx::query(sql)
        .bind(&key.network)
        .bind(&key.asset)
        .bind(&key.payer)
        .bind(&key.nonce)
}

fn row_to_claim(r: &sqlx::any::AnyRow) -> Result<ClaimRow, sqlx::Error> {
    let state: String = r.try_get("state")?;
    Ok(ClaimRow {
        key: ReplayKey {
            network: r.try_get("network")?,
            asset: r.try_get("asset")?,
            payer: r.try_get("payer")?,
            nonce: r.try_get("nonce")?,
        },
        tenant: r.try_get("tenant")?,
        route: r.try_get("route")?,
        amount: r.try_get("amount")?,
        state: PaymentState::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown payment state '{state}'").into()))?,
        tx_hash: r.try_get("tx_hash")?,
        payload: r.try_get("payload")?,
        valid_before: r.try_get::<i64, _>("valid_before")? as u64,
        claimed_at: r.try_get::<i64, _>("claimed_at")? as u64,
        updated_at: r.try_get::<i64, _>("updated_at")? as u64,
        delivery: {
            let d: String = r.try_get("delivery")?;
            Delivery::parse(&d).ok_or_else(|| sqlx::Error::Decode(format!("unknown delivery '{d}'").into()))?
        },
    })
}

impl Store {
    /// Claims an authorization for one request. `false` when it is already claimed or spent —
    /// by this gateway or by any other sharing the database (the primary key decides).
    pub async fn claim(&self, c: &NewClaim<'_>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO payments (network, asset, payer, nonce, tenant, route, pay_to, amount, state, tx_hash, payload, valid_before, claimed_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'claimed', NULL, $9, $10, $11, $11) \
             ON CONFLICT (network, asset, payer, nonce) DO NOTHING",
        )
        .bind(&c.key.network)
        .bind(&c.key.asset)
        .bind(&c.key.payer)
        .bind(&c.key.nonce)
        .bind(c.tenant)
        .bind(c.route)
        .bind(c.pay_to)
        .bind(&c.amount)
        .bind(&c.payload)
        .bind(c.valid_before as i64)
        .bind(c.now_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a claim to `state`, with the transaction that carries it.
    pub async fn set_state(
        &self,
        key: &ReplayKey,
        state: PaymentState,
        tx: Option<&str>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        keyed(
            concat!(
                "UPDATE payments SET state = $5, tx_hash = COALESCE($6, tx_hash), updated_at = $7 WHERE ",
                key_where!()
            ),
            key,
        )
        .bind(state.as_str())
        .bind(tx)
        .bind(now_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records whether a payment's request was served.
    pub async fn set_delivery(&self, key: &ReplayKey, d: Delivery) -> Result<(), StoreError> {
        keyed(concat!("UPDATE payments SET delivery = $5 WHERE ", key_where!()), key)
            .bind(d.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes an owed payment for the request that brought the same signed `payload` again; `true`
    /// for exactly one of any number of concurrent takers.
    pub async fn take_owed(&self, key: &ReplayKey, payload: &str) -> Result<bool, StoreError> {
        let done = keyed(
            concat!(
                "UPDATE payments SET delivery = 'held' WHERE ",
                key_where!(),
                " AND delivery = 'owed' AND payload = $5"
            ),
            key,
        )
        .bind(payload)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a claim up: nothing was charged, and the client may use the authorization again.
    /// Only a claim that is still `claimed` is released; a pending or settled payment stays.
    pub async fn release(&self, key: &ReplayKey) -> Result<bool, StoreError> {
        let done = keyed(
            concat!("DELETE FROM payments WHERE ", key_where!(), " AND state = 'claimed'"),
            key,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a pending payment that reconciliation found never landed.
    pub async fn forget_unlanded(&self, key: &ReplayKey) -> Result<(), StoreError> {
        keyed(
            concat!("DELETE FROM payments WHERE ", key_where!(), " AND state <> 'settled'"),
            key,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn payment(&self, key: &ReplayKey) -> Result<Option<ClaimRow>, StoreError> {
        let row = keyed(concat!("SELECT * FROM payments WHERE ", key_where!()), key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(row_to_claim).transpose()?)
    }

    /// Claimed, pending and failed payments untouched since `before_ms`: for reconciliation.
    pub async fn unfinished(&self, before_ms: u64, limit: i64) -> Result<Vec<ClaimRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM payments WHERE state IN ('claimed', 'pending', 'failed') AND updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(before_ms.min(i64::MAX as u64) as i64)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row_to_claim).collect::<Result<_, _>>()?)
    }

    /// Payments served before their settlement and not settled (nor lost) yet, at most `limit`:
    /// the exposure other gateways, or this one before a restart, answered.
    pub async fn answered_unsettled(&self, limit: i64) -> Result<Vec<ClaimRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM payments WHERE delivery = 'served' AND state IN ('claimed', 'pending', 'failed') LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row_to_claim).collect::<Result<_, _>>()?)
    }

    /// Every failed payment's key (their payers owe them), at most `limit`.
    pub async fn failed_keys(&self, limit: i64) -> Result<Vec<ReplayKey>, StoreError> {
        let rows = sqlx::query("SELECT network, asset, payer, nonce FROM payments WHERE state = 'failed' LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplayKey {
                    network: r.try_get("network")?,
                    asset: r.try_get("asset")?,
                    payer: r.try_get("payer")?,
                    nonce: r.try_get("nonce")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Counts ledger rows per state (tests and the CLI).
    pub async fn count_payments(&self, state: PaymentState) -> Result<i64, StoreError> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM payments WHERE state = $1")
            .bind(state.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get::<i64, _>("n")?)
    }
}

impl ClaimRow {
    /// The second half of a listing cursor (the first is `claimed_at`).
    pub fn cursor_id(&self) -> String {
        format!("{}:{}", self.key.payer, self.key.nonce)
    }
}

impl Store {
    /// A tenant's ledger rows, newest first, filtered by time, network (CAIP-2 or name given as
    /// stored) and state, and paged by `(claimed_at, payer:nonce)`.
    pub async fn payments_of(&self, tenant: &str, l: &super::Listing) -> Result<Vec<ClaimRow>, StoreError> {
        let (after_at, after_id) = l.after.clone().unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query(
            "SELECT * FROM payments WHERE tenant = $1 AND claimed_at >= $2 AND claimed_at < $3 \
             AND ($4 = '' OR network = $4) AND ($5 = '' OR state = $5) \
             AND (claimed_at < $6 OR (claimed_at = $6 AND ($7 = '' OR payer || ':' || nonce < $7))) \
             ORDER BY claimed_at DESC, payer DESC, nonce DESC LIMIT $8",
        )
        .bind(tenant)
        .bind(l.since_ms.unwrap_or(0))
        .bind(l.until_ms.unwrap_or(i64::MAX))
        .bind(l.chain.clone().unwrap_or_default())
        .bind(l.outcome.clone().unwrap_or_default())
        .bind(after_at)
        .bind(after_id)
        .bind(l.limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row_to_claim).collect::<Result<_, _>>()?)
    }
}
