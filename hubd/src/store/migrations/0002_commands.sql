-- Commands the control plane sent, for at-most-once execution across
-- restarts: a row is written when a command starts (outcome NULL) and
-- completed when it finishes. A row still NULL after a restart was
-- interrupted and is reported as `unknown`, never run again.
CREATE TABLE commands (
    id              TEXT    PRIMARY KEY,
    kind            TEXT    NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    started_at_ms   INTEGER NOT NULL,
    outcome         TEXT,
    detail          TEXT,
    finished_at_ms  INTEGER
) STRICT;
