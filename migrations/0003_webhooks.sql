-- An app's webhook: the HMAC-SHA256 secret that signs `POST /_berth/webhook/reload` requests
-- (GitHub's X-Hub-Signature-256), and whether a reload through it also promotes. Created or
-- replaced by `berth app webhook-secret`; deleted with the app.
CREATE TABLE app_webhooks (
    app_id      TEXT PRIMARY KEY NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    secret      TEXT NOT NULL,
    promote     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
