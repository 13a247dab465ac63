-- Hosted mode: tenants, their API keys, proof verifications and consumed transactions.
-- Portable SQL: the same migration runs on SQLite and PostgreSQL.

-- A tenant: an API owner served by the shared gateways. `routes` is the JSON array of the same
-- route specs a drop-in config's [[routes]] holds. The quota counter is (period_start, used): the
-- period is the calendar month (UTC) that started at period_start; the first count in a later month
-- replaces the counter rather than adding to it (an allowance that refills, never accumulates).
CREATE TABLE tenants (
    id            TEXT    PRIMARY KEY,
    slug          TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    email         TEXT    NOT NULL,
    plan          TEXT    NOT NULL,
    status        TEXT    NOT NULL,   -- active | suspended
    upstream      TEXT,
    pay_to_evm    TEXT,
    pay_to_solana TEXT,
    routes        TEXT    NOT NULL,
    period_start  BIGINT  NOT NULL,   -- unix seconds
    used          BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL,   -- unix milliseconds
    updated_at    BIGINT  NOT NULL
);

-- API keys, by the SHA-256 of the whole key (hex); the key itself is never stored. `prefix` is the
-- first characters, to show in lists ("x402_live_3fK…").
CREATE TABLE api_keys (
    hash          TEXT    PRIMARY KEY,
    id            TEXT    NOT NULL UNIQUE,
    tenant_id     TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    prefix        TEXT    NOT NULL,
    scopes        TEXT    NOT NULL,   -- comma-separated: verify, settle, analytics, manage
    created_at    BIGINT  NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

-- A transaction proven as a payment to a tenant, consumed once: the primary key is what makes a
-- second verification of the same transaction TX_ALREADY_USED, on every gateway sharing the database.
CREATE TABLE consumed_txs (
    tenant_id     TEXT    NOT NULL,
    chain         TEXT    NOT NULL,
    tx_hash       TEXT    NOT NULL,
    used_at       BIGINT  NOT NULL,   -- unix milliseconds
    PRIMARY KEY (tenant_id, chain, tx_hash)
);

-- Every verification a tenant asked for through the API (proofs and x402-form checks), with its
-- answer, for the tenant's listings and usage breakdowns.
CREATE TABLE verifications (
    id            TEXT    PRIMARY KEY,
    tenant_id     TEXT    NOT NULL,
    at_ms         BIGINT  NOT NULL,
    kind          TEXT    NOT NULL,   -- proof | x402
    chain         TEXT    NOT NULL,
    tx_hash       TEXT,
    success       INTEGER NOT NULL,   -- 0 | 1
    error_code    TEXT,
    amount        TEXT,               -- atomic units
    payer         TEXT,
    confirmations BIGINT,
    risk_score    INTEGER
);
CREATE INDEX verifications_tenant_at ON verifications (tenant_id, at_ms);
CREATE INDEX attempts_tenant_at ON attempts (tenant, at_ms);
