//! Storage through sqlx, on SQLite (drop-in default) or PostgreSQL (shared by many gateways).
//!
//! The same portable migrations and queries run on both, through sqlx's `Any` driver.

mod attempts;
mod keys;
mod payment_ids;
mod payments;
mod tenants;
mod verifications;

pub use attempts::{Attempt, AttemptLog, Outcome};
pub use keys::KeyRow;
pub use payment_ids::IdClaim;
pub use payments::{ClaimRow, Delivery, NewClaim, PaymentState};
pub use tenants::{Counted, TenantChange, TenantRow};
pub use verifications::{Breakdown, Listing, VerificationRow};

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

/// The migrations, embedded in the binary and run at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database {url} is in use by another process: a SQLite ledger belongs to one tollgate at a time; stop the other one, or use PostgreSQL to share a ledger between gateways")]
    InUse { url: String },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    /// A failure that several waiting callers share (one query answered them all).
    #[error("database: {0}")]
    Shared(String),
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// A connection pool with tollgate's queries.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// Counters (quota, gas): on PostgreSQL their own connections with `synchronous_commit = off`,
    /// so that a hot tenant's counter row is locked only for the update, not also for a WAL flush.
    /// A database crash may forget the last moment's counts (a few verifications given free); money
    /// never goes through here (the ledger is on `pool`, fully durable). SQLite: the same pool.
    counters: AnyPool,
    kind: DbKind,
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Store {
    /// Connects (creating a SQLite file on first start) and runs the embedded migrations.
    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            DbKind::Sqlite
        } else {
            DbKind::Postgres
        };
        let full = match kind {
            DbKind::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_string(),
        };
        let opts = AnyConnectOptions::from_str(&full).map_err(|source| StoreError::Connect {
            url: redact(url),
            source,
        })?;
        // SQLite: one connection that holds the file for the life of the process, in WAL mode with
        // exclusive locking. Exclusive locking keeps WAL's index in heap memory instead of a shared
        // memory map of the `-shm` file: a mapped file that stops accepting writes (made immutable,
        // its filesystem remounted read-only, a full disk) kills the process with SIGBUS, while a
        // write that fails is an error that fails the request closed (503). It also makes a second
        // process on the same file fail at start instead of interleaving ledgers (PostgreSQL is for
        // sharing). SQLite serialises writers anyway; one connection costs nothing in throughput.
        let sqlite = kind == DbKind::Sqlite;
        const SQLITE_PRAGMAS: &str =
            "PRAGMA busy_timeout = 2000; PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;";
        if sqlite {
            // Ask once, outside the pool, so that a file held by another process is named as such
            // instead of surfacing as a pool timeout.
            let mut probe = <sqlx::AnyConnection as sqlx::Connection>::connect_with(&opts)
                .await
                .map_err(|source| StoreError::Connect {
                    url: redact(url),
                    source,
                })?;
            let held = probe.execute(SQLITE_PRAGMAS).await;
            let _ = sqlx::Connection::close(probe).await;
            match held {
                Err(sqlx::Error::Database(e)) if e.message().contains("locked") => {
                    return Err(StoreError::InUse { url: redact(url) })
                }
                Err(source) => {
                    return Err(StoreError::Connect {
                        url: redact(url),
                        source,
                    })
                }
                Ok(_) => {}
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 16 })
            .idle_timeout(if sqlite { None } else { Some(Duration::from_secs(600)) })
            .max_lifetime(if sqlite { None } else { Some(Duration::from_secs(1800)) })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Order matters: the locking mode must be set before WAL is first used.
                        // NORMAL sync is durable across process crashes in WAL mode.
                        conn.execute(SQLITE_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(url),
                source,
            })?;
        MIGRATOR.run(&pool).await?;
        let counters = if sqlite {
            pool.clone()
        } else {
            let opts = AnyConnectOptions::from_str(&full).map_err(|source| StoreError::Connect {
                url: redact(url),
                source,
            })?;
            AnyPoolOptions::new()
                .max_connections(8)
                .idle_timeout(Some(Duration::from_secs(600)))
                .max_lifetime(Some(Duration::from_secs(1800)))
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("SET synchronous_commit = off").await?;
                        Ok(())
                    })
                })
                .connect_lazy_with(opts)
        };
        Ok(Store { pool, counters, kind })
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.counters.close().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(super::redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
