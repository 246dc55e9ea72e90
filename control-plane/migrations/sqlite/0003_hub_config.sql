-- The desired slot configuration of each hub (F-14): a revision that only
-- grows, who changed it and when, and what the hub last reported about it.
-- A hub that never had a configuration set has no row (revision 0).
CREATE TABLE hub_config (
    hub_id              TEXT    PRIMARY KEY REFERENCES hubs (id),
    revision            INTEGER NOT NULL,
    updated_by          TEXT,
    updated_at_ms       INTEGER NOT NULL,
    applied_revision    INTEGER,
    applied_at_ms       INTEGER,
    rejected_revision   INTEGER,
    rejected_reason     TEXT,
    rejected_at_ms      INTEGER
);

-- The slots of a hub's desired configuration (its current revision only).
-- `driver` is the device binding as JSON in hubd's `DriverConfig` shape
-- (`{"type":"sim",...}`, `{"type":"at_modem","imei":"...",...}`). The SIP
-- password is never returned by the API, only whether it is set.
CREATE TABLE hub_config_slots (
    hub_id          TEXT    NOT NULL REFERENCES hubs (id),
    hub_slot_id     INTEGER NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('auto', 'mf', 'ls')),
    name            TEXT    NOT NULL,
    enabled         INTEGER NOT NULL,
    sip_number      TEXT    NOT NULL,
    sip_password    TEXT,
    driver          TEXT    NOT NULL,
    PRIMARY KEY (hub_id, hub_slot_id)
);
