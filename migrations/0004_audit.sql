-- The audit log: one row per admin change (create, update, delete, ...), with who asked for
-- it, when, and how it ended. Pruned after `[audit] retention_days`.
CREATE TABLE audit_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Unix time in seconds.
    at       INTEGER NOT NULL,
    -- The local user on the admin socket (name, or uid:N when the uid has no name).
    user     TEXT NOT NULL,
    -- What was asked, e.g. `app create`, `param update`.
    command  TEXT NOT NULL,
    -- The target app path as given; empty when the command has none.
    app      TEXT NOT NULL,
    -- `ok` or `error`.
    result   TEXT NOT NULL,
    -- The error message; empty when ok.
    message  TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events (at);
