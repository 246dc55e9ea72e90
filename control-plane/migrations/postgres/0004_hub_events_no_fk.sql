-- hub_events is an append-only log written only by the outbox ingest
-- (store/ingest.rs). Each ingest transaction first locks the hub's hub_sync
-- row and raises its committed_seq in the same transaction; hub_sync
-- REFERENCES hubs, so a batch for a hub that does not exist fails there and
-- rolls back whole, and hubs are never deleted (revoked hubs stay). The
-- per-row foreign-key check of hub_events guarded nothing more, and cost about
-- 3 s of Postgres CPU per million rows: it made the catch-up COPY 3.7x slower
-- (docs/benchmarks.md, sync_catchup).
ALTER TABLE hub_events DROP CONSTRAINT IF EXISTS hub_events_hub_id_fkey;
