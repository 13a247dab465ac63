//! The attempt log: one row per verification attempt, written in batches off the request path.
//!
//! The ledger ([`super::payments`]) is written synchronously because money depends on it; the attempt
//! log is the audit trail and is batched. A crash loses at most the last batch window of attempt rows
//! (tens of milliseconds), never a payment.

use std::time::Duration;

use sqlx::Row;
use tokio::sync::mpsc;

use super::{Store, StoreError};

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Settled,
    Pending,
    Rejected,
    Duplicate,
    Unavailable,
    /// Verified, but the upstream failed (settle = after) or the transfer was refused: not charged.
    Released,
    Error,
    /// Served before its settlement (`answer = "verified"` / `"submitted"`); the settlement follows.
    Answered,
    /// Served before its settlement, whose transfer then failed on chain: owed by the payer.
    Failed,
    /// Served before its settlement and never settled before its authorization expired.
    Lost,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Settled => "settled",
            Outcome::Pending => "pending",
            Outcome::Rejected => "rejected",
            Outcome::Duplicate => "duplicate",
            Outcome::Unavailable => "unavailable",
            Outcome::Released => "released",
            Outcome::Error => "error",
            Outcome::Answered => "answered",
            Outcome::Failed => "failed",
            Outcome::Lost => "lost",
        }
    }
}

/// One attempt's row.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub at_ms: u64,
    pub tenant: String,
    pub route: String,
    pub method: String,
    pub path: String,
    pub x402_version: u8,
    pub network: Option<String>,
    pub payer: Option<String>,
    pub amount: Option<String>,
    pub nonce: Option<String>,
    pub tx_hash: Option<String>,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub settle_mode: &'static str,
    pub verify_us: Option<u64>,
    pub settle_us: Option<u64>,
    pub total_us: u64,
}

const COLS: usize = 18;
const BATCH: usize = 256;
/// The rows of each insert statement, largest first (ending in 1, so that every batch divides).
const ROWS_PER_INSERT: [usize; 4] = [64, 16, 4, 1];

/// The insert statement for `ROWS_PER_INSERT[i]` rows, built once.
fn insert_sql(i: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    &SQL.get_or_init(|| {
        ROWS_PER_INSERT
            .iter()
            .map(|&rows| {
                let mut sql = String::from(
                    "INSERT INTO attempts (id, at_ms, tenant, route, method, path, x402_version, network, payer, amount, nonce, tx_hash, outcome, reason, settle_mode, verify_us, settle_us, total_us) VALUES ",
                );
                for r in 0..rows {
                    if r > 0 {
                        sql.push(',');
                    }
                    sql.push('(');
                    for c in 0..COLS {
                        if c > 0 {
                            sql.push(',');
                        }
                        sql.push_str(&format!("${}", r * COLS + c + 1));
                    }
                    sql.push(')');
                }
                sql
            })
            .collect()
    })[i]
}

fn new_id() -> String {
    let b: [u8; 16] = rand::random();
    alloy::hex::encode(b)
}

impl Store {
    /// Writes attempts in one transaction, as multi-row inserts of a few fixed sizes
    /// ([`ROWS_PER_INSERT`]): each size is one statement the connection prepares once and keeps.
    /// (One statement of the batch's own size made a new statement for nearly every batch: preparing
    /// a 200-row insert cost SQLite millions of instructions, and the sizes pushed the payment path's
    /// own statements out of the connection's statement cache.)
    pub async fn insert_attempts(&self, batch: &[Attempt]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let mut rest = batch;
        while !rest.is_empty() {
            let (i, rows) = ROWS_PER_INSERT
                .iter()
                .copied()
                .enumerate()
                .find(|&(_, n)| n <= rest.len())
                .expect("the smallest size is one row");
            let (now, later) = rest.split_at(rows);
            let mut q = sqlx::query(insert_sql(i));
            for a in now {
                q = q
                    .bind(new_id())
                    .bind(a.at_ms as i64)
                    .bind(a.tenant.clone())
                    .bind(a.route.clone())
                    .bind(a.method.clone())
                    .bind(a.path.clone())
                    .bind(a.x402_version as i32)
                    .bind(a.network.clone())
                    .bind(a.payer.clone())
                    .bind(a.amount.clone())
                    .bind(a.nonce.clone())
                    .bind(a.tx_hash.clone())
                    .bind(a.outcome.unwrap_or(Outcome::Error).as_str())
                    .bind(a.reason.clone())
                    .bind(a.settle_mode)
                    .bind(a.verify_us.map(|v| v as i64))
                    .bind(a.settle_us.map(|v| v as i64))
                    .bind(a.total_us as i64);
            }
            q.execute(&mut *tx).await?;
            rest = later;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A tenant's paid-request attempts since `since_ms`, by day, network and outcome.
    pub async fn attempt_breakdown(&self, tenant: &str, since_ms: i64) -> Result<super::Breakdown, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms / 86400000 AS day, COALESCE(network, '') AS network, outcome, COUNT(*) AS n FROM attempts \
             WHERE tenant = $1 AND at_ms >= $2 GROUP BY at_ms / 86400000, COALESCE(network, ''), outcome ORDER BY 1, 2, 3",
        )
        .bind(tenant)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    crate::clock::civil_day(r.try_get("day")?),
                    r.try_get("network")?,
                    r.try_get("outcome")?,
                    r.try_get("n")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Counts attempts with `outcome` (tests and the CLI).
    pub async fn count_attempts(&self, outcome: Outcome) -> Result<i64, StoreError> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM attempts WHERE outcome = $1")
            .bind(outcome.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get::<i64, _>("n")?)
    }
}

/// The sending side of the batched attempt writer.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    tx: mpsc::Sender<Msg>,
}

enum Msg {
    Attempt(Attempt),
    /// A settlement's gas, added to its tenant's use of the period that started at `period`.
    Gas {
        tenant: String,
        period: i64,
        gas: u64,
    },
    /// Answered once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl AttemptLog {
    /// Starts the writer on the current runtime. The returned handle finishes once every sender is
    /// dropped and the last batch is written.
    pub fn start(store: Store) -> (AttemptLog, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Msg>(16_384);
        let handle = tokio::spawn(async move {
            let mut buf = Vec::with_capacity(BATCH);
            let mut flushed = Vec::new();
            let mut gas: std::collections::HashMap<(String, i64), u64> = Default::default();
            type Gas = std::collections::HashMap<(String, i64), u64>;
            let take = |m: Msg, buf: &mut Vec<Attempt>, flushed: &mut Vec<_>, gas: &mut Gas| match m {
                Msg::Attempt(a) => buf.push(a),
                Msg::Gas { tenant, period, gas: g } => *gas.entry((tenant, period)).or_default() += g,
                Msg::Flush(done) => flushed.push(done),
            };
            while let Some(first) = rx.recv().await {
                take(first, &mut buf, &mut flushed, &mut gas);
                // Gather what arrives within a short window into one statement.
                let window = tokio::time::sleep(Duration::from_millis(20));
                tokio::pin!(window);
                while buf.len() < BATCH && flushed.is_empty() {
                    tokio::select! {
                        m = rx.recv() => match m { Some(m) => take(m, &mut buf, &mut flushed, &mut gas), None => break },
                        _ = &mut window => break,
                    }
                }
                if !buf.is_empty() {
                    if let Err(e) = store.insert_attempts(&buf).await {
                        tracing::error!(error = %e, rows = buf.len(), "could not write attempt records");
                    }
                }
                // One statement per tenant for the gas its settlements of this window used.
                for ((tenant, period), g) in gas.drain() {
                    if let Err(e) = store.add_gas(&tenant, period, g).await {
                        tracing::error!(error = %e, tenant = %tenant, gas = g, "could not add settlement gas to a tenant's use");
                    }
                }
                buf.clear();
                for done in flushed.drain(..) {
                    let _ = done.send(());
                }
            }
        });
        (AttemptLog { tx }, handle)
    }

    /// Queues an attempt; never blocks the request. If the writer is far behind, the row is dropped
    /// with a warning rather than slowing payments down.
    pub fn record(&self, a: Attempt) {
        if let Err(e) = self.tx.try_send(Msg::Attempt(a)) {
            tracing::warn!(error = %e, "attempt log is full; an attempt record was dropped");
        }
    }

    /// Queues a settlement's gas for its tenant's monthly use (summed per tenant and written with the
    /// next batch). If the writer is far behind, it is written now instead: gas is never dropped.
    pub async fn add_gas(&self, store: &Store, tenant: &str, period: i64, gas: u64) {
        let msg = Msg::Gas {
            tenant: tenant.to_string(),
            period,
            gas,
        };
        if self.tx.try_send(msg).is_err() {
            if let Err(e) = store.add_gas(tenant, period, gas).await {
                tracing::error!(error = %e, tenant = %tenant, gas, "could not add settlement gas to a tenant's use");
            }
        }
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}
