-- The postgres directory schema as commit 9a11c76 created it.
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
CREATE TABLE IF NOT EXISTS mfa_exports (
    id BIGSERIAL PRIMARY KEY,
    factor_id TEXT NOT NULL,
    provider_user_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    attempted_at_ms BIGINT NOT NULL,
    -- NULL: the call was made, or about to be, and its result never written.
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS mfa_exports_user ON mfa_exports(provider_user_id, attempted_at_ms);
CREATE TABLE IF NOT EXISTS mfa_backfill (
    factor_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT,
    lease_token TEXT,
    lease_until_ms BIGINT,
    run_id TEXT,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS mfa_audit (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    user_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resume_tokens (
    jti TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    record TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT
);
CREATE TABLE IF NOT EXISTS import_files (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    users BIGINT NOT NULL,
    status TEXT NOT NULL,
    job_id TEXT,
    attempts INTEGER NOT NULL,
    inserted BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    duplicates BIGINT NOT NULL,
    last_error TEXT,
    retry_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS recovery_codes (
    user_id TEXT NOT NULL,
    slot BIGINT NOT NULL,
    digest TEXT NOT NULL,
    issued_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT,
    PRIMARY KEY (user_id, slot)
);
CREATE TABLE IF NOT EXISTS recovery_throttle (
    user_id TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_failure_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS recoveries (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    path TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    ready_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    reasons TEXT NOT NULL,
    cancel_digest TEXT NOT NULL,
    finished_at_ms BIGINT,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS recoveries_user ON recoveries(user_id);
CREATE UNIQUE INDEX IF NOT EXISTS recoveries_open ON recoveries(user_id)
    WHERE status IN ('waiting', 'enrolling');
CREATE TABLE IF NOT EXISTS session_revocations (
    user_id TEXT PRIMARY KEY,
    revoked_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS login_sightings (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    digest TEXT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, kind, digest)
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    key_id TEXT
);
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS key_id TEXT;
CREATE TABLE IF NOT EXISTS support_requests (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    user_id TEXT NOT NULL,
    params TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    evidence TEXT NOT NULL,
    reason TEXT NOT NULL,
    skip_wait_reason TEXT,
    approved_by TEXT,
    approval_evidence TEXT,
    approval_skip_reason TEXT,
    status TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    ready_at_ms BIGINT,
    finished_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS support_requests_user ON support_requests(user_id);
CREATE TABLE IF NOT EXISTS rate_windows (
    key TEXT NOT NULL,
    window_ms BIGINT NOT NULL,
    hits BIGINT NOT NULL,
    PRIMARY KEY (key, window_ms)
);
CREATE INDEX IF NOT EXISTS rate_windows_window ON rate_windows(window_ms);
CREATE TABLE IF NOT EXISTS proofs (
    digest TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    shown TEXT NOT NULL,
    recovery_id TEXT,
    issued_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    single_use BIGINT NOT NULL,
    used_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS proofs_expiry ON proofs(expires_at_ms);
CREATE TABLE IF NOT EXISTS enrolments (
    factor_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    proof_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
