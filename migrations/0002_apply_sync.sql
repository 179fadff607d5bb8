-- What `berth apply` declared for an app the last time it applied it (the base of the three-way
-- merge), and from which file. Goes with the app.
CREATE TABLE applied_apps (
    app_id      TEXT PRIMARY KEY NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    declaration TEXT NOT NULL,
    file        TEXT NOT NULL,
    applied_at  INTEGER NOT NULL
);

-- Scheduled syncs: an apply file re-applied every `minutes`, or on `sync run` / its webhook.
-- `options` is JSON (branch, params, promote, approve, clobber). `secret` verifies the webhook's
-- HMAC signature, so it is stored as it is (the database is owner-only).
CREATE TABLE syncs (
    id           TEXT PRIMARY KEY NOT NULL,
    file         TEXT NOT NULL,
    minutes      REAL NOT NULL,
    options      TEXT NOT NULL,
    secret       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_run_at  INTEGER,
    last_commit  TEXT,
    last_result  TEXT,
    last_error   TEXT
);
