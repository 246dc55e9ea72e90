-- Postgres drops hub_events' foreign key to hubs at this version (see
-- postgres/0004_hub_events_no_fk.sql). SQLite keeps it: changing it would mean
-- rebuilding the table, and its row-by-row ingest pays little for the check.
-- The version exists so both trees keep the same numbers.
SELECT 1;
