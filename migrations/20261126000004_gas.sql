-- Gas the operator's relayer spent this period settling a tenant's payments (each payment's share
-- of its transaction's gasUsed), checked against the plan's gas_per_month. Reset with `used` when
-- a new period starts (same period_start).
ALTER TABLE tenants ADD COLUMN gas_used BIGINT NOT NULL DEFAULT 0;
