-- Enrolled hub certificates: a connection's client certificate is looked up
-- here by its SHA-256 fingerprint to find which hub it is.
CREATE TABLE hub_certificates (
    fingerprint     TEXT    PRIMARY KEY,
    hub_id          TEXT    NOT NULL REFERENCES hubs (id),
    issued_at_ms    BIGINT  NOT NULL,
    expires_at_ms   BIGINT  NOT NULL
);
CREATE INDEX hub_certificates_by_hub ON hub_certificates (hub_id);

-- Events hubs delivered from their outboxes, exactly once per (hub_id, seq).
CREATE TABLE hub_events (
    hub_id          TEXT    NOT NULL REFERENCES hubs (id),
    seq             BIGINT  NOT NULL,
    kind            TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    created_at_ms   BIGINT  NOT NULL,
    received_at_ms  BIGINT  NOT NULL,
    PRIMARY KEY (hub_id, seq)
);

-- Per-hub sync state: the highest contiguous outbox seq committed here, the
-- desired and applied config revisions, what the hub said about itself.
CREATE TABLE hub_sync (
    hub_id              TEXT    PRIMARY KEY REFERENCES hubs (id),
    committed_seq       BIGINT,
    applied_revision    BIGINT,
    software_version    TEXT,
    protocol_version    BIGINT,
    connected_at_ms     BIGINT,
    disconnected_at_ms  BIGINT
);

-- The hub outbox seq of the report a slot row reflects: a re-delivered or
-- older report never overwrites a newer one.
ALTER TABLE slots ADD COLUMN hub_seq BIGINT;

-- Command delivery: queued -> sent (delivered to the hub's session) ->
-- done / failed / unknown (the hub's result), or expired (its TTL passed
-- before the hub ran it).
ALTER TABLE hub_commands ADD COLUMN sent_at_ms BIGINT;
ALTER TABLE hub_commands ADD COLUMN finished_at_ms BIGINT;
ALTER TABLE hub_commands ADD COLUMN result TEXT;
