-- The sqlite directory schema as commit c1ad622 created it.
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    email_norm TEXT NOT NULL UNIQUE,
    email_verified INTEGER NOT NULL,
    app_metadata TEXT NOT NULL,
    user_metadata TEXT NOT NULL,
    password_hash TEXT,
    created_at_ms INTEGER NOT NULL,
    last_login_ms INTEGER,
    logins_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS identities (
    provider TEXT NOT NULL,
    provider_user_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    connection TEXT NOT NULL,
    PRIMARY KEY (provider, provider_user_id)
);
CREATE INDEX IF NOT EXISTS identities_user ON identities(user_id);
CREATE TABLE IF NOT EXISTS applied_transactions (
    transaction_id TEXT PRIMARY KEY,
    user_id TEXT,
    applied_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error TEXT,
    claimed_until_ms INTEGER,
    lease_token TEXT,
    UNIQUE (topic, key)
);
CREATE TABLE IF NOT EXISTS factors (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL,
    provider TEXT NOT NULL,
    legacy_provider_user_id TEXT,
    phone_ciphertext BLOB,
    phone_nonce BLOB,
    phone_key_id TEXT,
    status TEXT NOT NULL,
    enrolled_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    last_used_ms INTEGER,
    cohort TEXT,
    reverted INTEGER NOT NULL DEFAULT 0,
    -- A sealed phone is all three parts or none.
    CHECK ((phone_ciphertext IS NULL) = (phone_nonce IS NULL)
           AND (phone_nonce IS NULL) = (phone_key_id IS NULL))
);
CREATE INDEX IF NOT EXISTS factors_user ON factors(user_id);
CREATE TABLE IF NOT EXISTS resume_tokens (
    jti TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    record TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms INTEGER
);
