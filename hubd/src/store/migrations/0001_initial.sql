-- Slots as configured, with the state the supervisor last recorded.
CREATE TABLE slots (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('auto', 'mf', 'ls')),
    sip_number      TEXT    NOT NULL,
    enabled         INTEGER NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'IDLE',
    fault_reason    TEXT,
    state_since_ms  INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
) STRICT;

-- Every accepted transition of every slot's state machine (F-05).
CREATE TABLE slot_transitions (
    id          INTEGER PRIMARY KEY,
    slot_id     INTEGER NOT NULL,
    from_state  TEXT    NOT NULL,
    to_state    TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    reason      TEXT,
    at_ms       INTEGER NOT NULL,
    outbox_seq  INTEGER NOT NULL
) STRICT;
CREATE INDEX slot_transitions_by_slot ON slot_transitions (slot_id, id);

-- What the hub must deliver to the control plane, in order. `seq` is assigned
-- by the writer task, per hub, strictly increasing, never reused.
CREATE TABLE outbox (
    seq            INTEGER PRIMARY KEY,
    kind           TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    acked          INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Call detail records (F-08), first version.
CREATE TABLE cdrs (
    call_id         TEXT    PRIMARY KEY,
    slot_id         INTEGER NOT NULL,
    direction       TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    remote_number   TEXT    NOT NULL,
    started_at_ms   INTEGER NOT NULL,
    answered_at_ms  INTEGER,
    ended_at_ms     INTEGER NOT NULL,
    billsec         INTEGER NOT NULL,
    end_cause       TEXT    NOT NULL,
    outbox_seq      INTEGER NOT NULL
) STRICT;
CREATE INDEX cdrs_by_slot ON cdrs (slot_id, started_at_ms);

-- Small hub-local facts, e.g. the outbox sequence high-water mark.
CREATE TABLE settings (
    key            TEXT    PRIMARY KEY,
    value          TEXT    NOT NULL,
    updated_at_ms  INTEGER NOT NULL
) STRICT;
