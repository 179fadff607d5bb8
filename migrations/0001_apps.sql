CREATE TABLE apps (
    id          TEXT PRIMARY KEY NOT NULL,
    domain      TEXT NOT NULL,
    path        TEXT NOT NULL,
    source_url  TEXT NOT NULL,
    spec        TEXT NOT NULL,
    params      TEXT NOT NULL,   -- JSON object of string values
    app_config  TEXT NOT NULL,   -- JSON object of string values
    created_at  INTEGER NOT NULL,
    UNIQUE (domain, path)
);
