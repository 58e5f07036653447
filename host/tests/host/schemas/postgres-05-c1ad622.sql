-- The postgres directory schema as commit c1ad622 created it.
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    email_norm TEXT NOT NULL UNIQUE,
    email_verified BOOLEAN NOT NULL,
    app_metadata TEXT NOT NULL,
    user_metadata TEXT NOT NULL,
    password_hash TEXT,
    created_at_ms BIGINT NOT NULL,
    last_login_ms BIGINT,
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
    applied_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    last_error TEXT,
    claimed_until_ms BIGINT,
    lease_token TEXT,
    UNIQUE (topic, key)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(status, next_attempt_at_ms);
-- Older databases: the lease token that fences a dispatcher's updates to its claim.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS lease_token TEXT;
CREATE TABLE IF NOT EXISTS factors (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL,
    provider TEXT NOT NULL,
    legacy_provider_user_id TEXT,
    phone_ciphertext BYTEA,
    phone_nonce BYTEA,
    phone_key_id TEXT,
    status TEXT NOT NULL,
    enrolled_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    last_used_ms BIGINT,
    cohort TEXT,
    reverted BOOLEAN NOT NULL DEFAULT false,
    -- A sealed phone is all three parts or none.
    CHECK ((phone_ciphertext IS NULL) = (phone_nonce IS NULL)
           AND (phone_nonce IS NULL) = (phone_key_id IS NULL))
);
CREATE INDEX IF NOT EXISTS factors_user ON factors(user_id);
-- Older databases: the rollout cohort and the operator's revert.
ALTER TABLE factors ADD COLUMN IF NOT EXISTS cohort TEXT;
ALTER TABLE factors ADD COLUMN IF NOT EXISTS reverted BOOLEAN NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS resume_tokens (
    jti TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    record TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT
);
