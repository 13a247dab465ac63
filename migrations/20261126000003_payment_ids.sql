-- The payment-identifier extension: a client's idempotency id, per tenant. `payload_hash` is the
-- SHA-256 of what was paid under the id (a retry sends the same; anything else is a conflict).
-- `answer` is the stored final answer (JSON): the facilitator's settle response, or the proxy's
-- response to replay. A request working on an id holds it until `lease_until` (unix ms), so that a
-- crashed holder does not lock the id forever.
CREATE TABLE payment_ids (
    tenant        TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    payload_hash  TEXT    NOT NULL,
    answer        TEXT,
    lease_until   BIGINT  NOT NULL,
    created_ms    BIGINT  NOT NULL,
    PRIMARY KEY (tenant, id)
);
