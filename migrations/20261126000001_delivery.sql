-- Whether a payment's request was served. 'held': a request holds it (or held it and was served,
-- for settled payments). 'owed': charged, or maybe charged, and not served: its settlement's outcome
-- was unknown (answered "pending"), or the upstream failed after settlement, or the client went
-- away. The same signed payment, sent again for the same route, takes it ('owed' -> 'held',
-- atomically) and is served once it is settled, so retrying is safe for payers and never charges
-- twice. 'served': served while its settlement was still pending (a replay is then a duplicate).
ALTER TABLE payments ADD COLUMN delivery TEXT NOT NULL DEFAULT 'held';
