-- Call centres (the seeds' ARCHONTs). Every tenant row points at one.
CREATE TABLE centres (
    id              TEXT    PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    template        TEXT    NOT NULL,
    numbering_from  INTEGER NOT NULL,
    numbering_to    INTEGER NOT NULL,
    settings        TEXT    NOT NULL,
    created_by      TEXT,
    created_at_ms   INTEGER NOT NULL
);

-- Accounts. centre_id is NULL only for platform administrators.
CREATE TABLE users (
    id              TEXT    PRIMARY KEY,
    centre_id       TEXT    REFERENCES centres (id),
    email           TEXT    NOT NULL UNIQUE,
    password_hash   TEXT    NOT NULL,
    role            TEXT    NOT NULL CHECK (role IN ('admin', 'supervisor', 'operator', 'technician', 'viewer')),
    disabled_at_ms  INTEGER,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);
CREATE INDEX users_by_centre ON users (centre_id, email);

-- Rotating refresh tokens. Only a hash is kept; a family is one login.
CREATE TABLE refresh_tokens (
    id              TEXT    PRIMARY KEY,
    family_id       TEXT    NOT NULL,
    user_id         TEXT    NOT NULL REFERENCES users (id),
    token_hash      TEXT    NOT NULL UNIQUE,
    issued_at_ms    INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    used_at_ms      INTEGER,
    revoked_at_ms   INTEGER
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);

-- Append-only security audit log.
CREATE TABLE security_audit_log (
    id              INTEGER PRIMARY KEY,
    at_ms           INTEGER NOT NULL,
    centre_id       TEXT,
    actor_id        TEXT,
    actor_email     TEXT,
    action          TEXT    NOT NULL,
    target          TEXT,
    source_addr     TEXT,
    outcome         TEXT    NOT NULL,
    detail          TEXT
);
CREATE INDEX audit_by_centre ON security_audit_log (centre_id, id);

-- Hubs in the field, and their one-time enrollment tokens.
CREATE TABLE hubs (
    id              TEXT    PRIMARY KEY,
    centre_id       TEXT    NOT NULL REFERENCES centres (id),
    name            TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    revoked_at_ms   INTEGER,
    last_seen_ms    INTEGER
);
CREATE INDEX hubs_by_centre ON hubs (centre_id, id);

CREATE TABLE enrollment_tokens (
    token_hash      TEXT    PRIMARY KEY,
    hub_id          TEXT    NOT NULL REFERENCES hubs (id),
    created_by      TEXT,
    created_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    used_at_ms      INTEGER
);

-- Slots as their hubs report them; `id` is the control plane's own number.
CREATE TABLE slots (
    id              INTEGER PRIMARY KEY,
    centre_id       TEXT    NOT NULL REFERENCES centres (id),
    hub_id          TEXT    NOT NULL REFERENCES hubs (id),
    hub_slot_id     INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('auto', 'mf', 'ls')),
    sip_number      TEXT    NOT NULL,
    fsm_state       TEXT    NOT NULL,
    fault_reason    TEXT,
    remote_host     TEXT,
    updated_at_ms   INTEGER NOT NULL,
    UNIQUE (hub_id, hub_slot_id)
);
CREATE INDEX slots_by_centre ON slots (centre_id, id);

-- Commands for hubs (restart a slot, place a call); the sync delivers them.
CREATE TABLE hub_commands (
    id              TEXT    PRIMARY KEY,
    centre_id       TEXT    NOT NULL,
    hub_id          TEXT    NOT NULL REFERENCES hubs (id),
    slot_id         INTEGER REFERENCES slots (id),
    kind            TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    created_by      TEXT,
    created_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL
);
CREATE INDEX hub_commands_by_hub ON hub_commands (hub_id, status, created_at_ms);

-- Remote-access (Guacamole) sessions granted to users.
CREATE TABLE remote_sessions (
    id              TEXT    PRIMARY KEY,
    centre_id       TEXT    NOT NULL,
    slot_id         INTEGER NOT NULL REFERENCES slots (id),
    user_id         TEXT    NOT NULL REFERENCES users (id),
    protocol        TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL
);
