-- An app: where it is served, what it is made from, and which of its versions serve prod
-- and stage. Its configuration lives in versions: every staged change adds one.
CREATE TABLE apps (
    id                    TEXT PRIMARY KEY NOT NULL,
    domain                TEXT NOT NULL,
    path                  TEXT NOT NULL,
    source_url            TEXT NOT NULL,
    spec                  TEXT NOT NULL,
    created_at            INTEGER NOT NULL,
    prod_version          INTEGER NOT NULL,
    stage_version         INTEGER NOT NULL,
    previous_prod_version INTEGER NOT NULL DEFAULT 0,
    UNIQUE (domain, path)
);

-- One configuration of an app: params, per-app config, build args, container options, the
-- fetched source (commit, snapshot folder) and the image its build inputs hash to, as JSON.
-- Secrets appear only as {{secret ...}} templates, never resolved.
CREATE TABLE app_versions (
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    config      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (app_id, version)
);
