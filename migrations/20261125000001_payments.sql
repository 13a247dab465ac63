-- Portable SQL: the same migration runs on SQLite and PostgreSQL.

-- The payment ledger and replay guard. One row per EIP-3009 authorization (network, asset, payer,
-- nonce); the primary key is what stops two requests, or two gateway instances sharing the database,
-- from both spending one authorization. Rows move claimed -> settled | pending; a released claim
-- (after-mode upstream failure, refused transfer) is deleted, so the client may use it again.
CREATE TABLE payments (
    network      TEXT    NOT NULL,
    asset        TEXT    NOT NULL,
    payer        TEXT    NOT NULL,
    nonce        TEXT    NOT NULL,
    tenant       TEXT    NOT NULL,
    route        TEXT    NOT NULL,
    pay_to       TEXT    NOT NULL,
    amount       TEXT    NOT NULL,   -- atomic units, decimal
    state        TEXT    NOT NULL,   -- claimed | pending | settled
    tx_hash      TEXT,
    payload      TEXT    NOT NULL,   -- the signed authorization, to reconcile after a crash
    valid_before BIGINT  NOT NULL,   -- unix seconds
    claimed_at   BIGINT  NOT NULL,   -- unix milliseconds
    updated_at   BIGINT  NOT NULL,
    PRIMARY KEY (network, asset, payer, nonce)
);
CREATE INDEX payments_state_updated ON payments (state, updated_at);

-- Every verification attempt that got as far as a decoded payment, with its outcome and timings.
CREATE TABLE attempts (
    id           TEXT    PRIMARY KEY,
    at_ms        BIGINT  NOT NULL,
    tenant       TEXT    NOT NULL,
    route        TEXT    NOT NULL,
    method       TEXT    NOT NULL,
    path         TEXT    NOT NULL,
    x402_version INTEGER NOT NULL,
    network      TEXT,
    payer        TEXT,
    amount       TEXT,
    nonce        TEXT,
    tx_hash      TEXT,
    outcome      TEXT    NOT NULL,   -- settled | pending | rejected | duplicate | unavailable | released | error
    reason       TEXT,
    settle_mode  TEXT    NOT NULL,   -- before | after
    verify_us    BIGINT,
    settle_us    BIGINT,
    total_us     BIGINT  NOT NULL
);
CREATE INDEX attempts_at ON attempts (at_ms);
CREATE INDEX attempts_payer ON attempts (payer);
