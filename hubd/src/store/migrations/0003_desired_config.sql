-- Configuration revisions the control plane pushed and this hub applied
-- (F-14), each stored with the hub's slots in one transaction before the
-- running hub changes. The newest one is what the hub runs, and what it
-- starts with next time (it wins over the file's [[slots]]). The document
-- is the control plane's JSON ({"slots":[...]}, SIP passwords included).
CREATE TABLE desired_config (
    revision        INTEGER PRIMARY KEY,
    document        TEXT    NOT NULL,
    received_at_ms  INTEGER NOT NULL
) STRICT;

-- The revision the hub applied: one row, absent until the first push.
CREATE TABLE applied_config (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    revision        INTEGER NOT NULL REFERENCES desired_config (revision),
    applied_at_ms   INTEGER NOT NULL
) STRICT;
