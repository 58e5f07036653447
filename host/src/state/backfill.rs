//! What the MFA backfill keeps in the directory, beside the factors:
//!
//! - `mfa_exports`, the ledger: one row per call to the old provider's phone export,
//!   written *before* the call. The per-user quota (3 per 30 days) is checked against
//!   it, so a job that dies between the call and recording its result has already
//!   counted the call: no fourth call, whatever crashes.
//! - `mfa_backfill`, one row per factor the job has taken up: claimed under a lease
//!   (a token and an expiry, shared by one chunk), then exported, skipped or failed.
//!   It is the job's checkpoint; a rerun takes up what is unclaimed or whose lease
//!   ran out.
//! - `mfa_audit`: operators' actions on factors (reverts).
//!
//! SQL is written once with PostgreSQL placeholders; SQLite takes `?` for `$`. An
//! optional parameter is cast where it is tested for NULL: PostgreSQL needs its type.

use serde::Serialize;

/// One chunk's hold on the factors it took up.
#[derive(Debug, Clone)]
pub struct Lease {
    pub token: String,
    pub until_ms: u64,
    pub run_id: String,
    pub now_ms: u64,
}

/// What an export call came to, as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportOutcome {
    Exported,
    /// A 429 with `Retry-After`: throttled before the provider served it, so not
    /// counted against the user's quota.
    Throttled,
    /// Anything else (a 5xx, a timeout, a refusal): counted, as the provider may have
    /// counted it.
    Failed,
}

impl ExportOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Exported => "exported",
            Self::Throttled => "throttled",
            Self::Failed => "failed",
        }
    }
}

/// Where a factor's backfill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillStatus {
    Claimed,
    Exported,
    /// Not attempted: over quota, or changed by its user meanwhile.
    Skipped,
    Failed,
}

impl BackfillStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Exported => "exported",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

/// One line of `portcullis mfa status`: active SMS factors of one cohort.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CohortStatus {
    pub cohort: String,
    pub factors: u64,
    /// Enrolled at the new provider (phone only).
    pub new_provider: u64,
    /// Phone exported, old-provider id kept (routing decides).
    pub exported: u64,
    /// Only the old provider's id: the backfill's work.
    pub pending: u64,
    /// The backfill skipped or failed them (see the job's report).
    pub failing: u64,
    /// Put back on the old provider by an operator.
    pub reverted: u64,
}

/// Factors the backfill may take up: active, at the old provider without a phone,
/// not reverted, in the cohort if one is named, and not taken up by anyone now (or
/// failed or skipped in another run, with `$3`). `$1` cohort or NULL, `$2` now, `$3`
/// retry failed, `$4` limit, `$5` this run.
pub(super) const CANDIDATES: &str = "
    SELECT f.id FROM factors f LEFT JOIN mfa_backfill b ON b.factor_id = f.id
    WHERE f.status = 'active' AND f.legacy_provider_user_id IS NOT NULL
      AND f.phone_ciphertext IS NULL AND NOT f.reverted
      AND (CAST($1 AS TEXT) IS NULL OR f.cohort = $1)
      AND (b.factor_id IS NULL
           OR (b.status = 'claimed' AND b.lease_until_ms < $2)
           OR ($3 AND b.status IN ('failed', 'skipped') AND b.run_id != $5))
    ORDER BY f.id LIMIT $4";

/// How many factors the backfill has left in a cohort (or all, `$1` NULL): the
/// progress bar's length, counted without reading them.
pub(super) const LEFT: &str = "
    SELECT COUNT(*) FROM factors
    WHERE status = 'active' AND legacy_provider_user_id IS NOT NULL
      AND phone_ciphertext IS NULL AND NOT reverted
      AND (CAST($1 AS TEXT) IS NULL OR cohort = $1)";

/// Takes up one factor under a chunk's lease, unless someone else holds it (or this
/// run already dealt with it): returns the id when taken. `$1` factor, `$2` token,
/// `$3` lease until, `$4` run, `$5` now, `$6` retry failed.
pub(super) const CLAIM: &str = "
    INSERT INTO mfa_backfill (factor_id, status, lease_token, lease_until_ms, run_id, updated_at_ms)
    VALUES ($1, 'claimed', $2, $3, $4, $5)
    ON CONFLICT (factor_id) DO UPDATE SET
        status = 'claimed', reason = NULL, lease_token = excluded.lease_token,
        lease_until_ms = excluded.lease_until_ms, run_id = excluded.run_id,
        updated_at_ms = excluded.updated_at_ms
    WHERE (mfa_backfill.status = 'claimed' AND mfa_backfill.lease_until_ms < excluded.updated_at_ms)
       OR ($6 AND mfa_backfill.status IN ('failed', 'skipped')
           AND mfa_backfill.run_id != excluded.run_id)
    RETURNING factor_id";

/// Attempts counted against a user's export quota since `$2`.
pub(super) const COUNTED_EXPORTS: &str = "
    SELECT COUNT(*) FROM mfa_exports
    WHERE provider_user_id = $1 AND attempted_at_ms > $2
      AND (outcome IS NULL OR outcome != 'throttled')";

pub(super) const RECORD_EXPORT: &str = "
    INSERT INTO mfa_exports (factor_id, provider_user_id, run_id, attempted_at_ms)
    VALUES ($1, $2, $3, $4) RETURNING id";

/// Renews a factor's lease for one export attempt, if this run still holds it. In the
/// ledger's transaction: an attempt is recorded only while its run holds the factor.
/// `$1` factor, `$2` token, `$3` until.
pub(super) const RENEW: &str = "
    UPDATE mfa_backfill SET lease_until_ms = $3
    WHERE factor_id = $1 AND lease_token = $2 AND status = 'claimed'";

/// What `begin_export` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportPermit {
    /// Recorded in the ledger under this id: make the call.
    Go(i64),
    /// The user has used the quota: no call.
    Quota,
    /// Another run took the factor over (this run's lease ran out): leave it.
    LostLease,
}

pub(super) const FINISH_EXPORT: &str = "UPDATE mfa_exports SET outcome = $2 WHERE id = $1";

/// Stores an exported phone only if the factor is still what the job read: active,
/// not reverted, the same old-provider id, no phone, unchanged since.
pub(super) const STORE_PHONE: &str = "
    UPDATE factors SET phone_ciphertext = $3, phone_nonce = $4, phone_key_id = $5,
                       updated_at_ms = $6
    WHERE id = $1 AND user_id = $2 AND status = 'active' AND NOT reverted
      AND phone_ciphertext IS NULL AND legacy_provider_user_id = $7 AND updated_at_ms = $8";

/// Ends a factor's backfill, fenced by the chunk's lease.
pub(super) const FINISH_BACKFILL: &str = "
    UPDATE mfa_backfill SET status = $3, reason = $4, lease_until_ms = NULL, updated_at_ms = $5
    WHERE factor_id = $1 AND lease_token = $2";

/// Puts a user's (or a cohort's) active old-provider factors back on the old
/// provider; returns their ids and users. `$1` user or NULL, `$2` cohort or NULL,
/// `$3` now.
pub(super) const REVERT: &str = "
    UPDATE factors SET reverted = TRUE, updated_at_ms = $3
    WHERE status = 'active' AND legacy_provider_user_id IS NOT NULL AND NOT reverted
      AND (CAST($1 AS TEXT) IS NULL OR user_id = $1)
      AND (CAST($2 AS TEXT) IS NULL OR cohort = $2)
    RETURNING id, user_id";

pub(super) const AUDIT: &str = "
    INSERT INTO mfa_audit (at_ms, actor, action, user_id, detail) VALUES ($1, $2, $3, $4, $5)";

pub(super) const STATUS: &str = "
    SELECT COALESCE(f.cohort, ''), COUNT(*),
        SUM(CASE WHEN f.legacy_provider_user_id IS NULL THEN 1 ELSE 0 END),
        SUM(CASE WHEN f.legacy_provider_user_id IS NOT NULL AND f.phone_ciphertext IS NOT NULL THEN 1 ELSE 0 END),
        SUM(CASE WHEN f.legacy_provider_user_id IS NOT NULL AND f.phone_ciphertext IS NULL THEN 1 ELSE 0 END),
        SUM(CASE WHEN b.status IN ('failed', 'skipped') AND f.phone_ciphertext IS NULL THEN 1 ELSE 0 END),
        SUM(CASE WHEN f.reverted THEN 1 ELSE 0 END)
    FROM factors f LEFT JOIN mfa_backfill b ON b.factor_id = f.id
    WHERE f.status = 'active' AND f.kind = 'sms'
    GROUP BY COALESCE(f.cohort, '') ORDER BY 1";

/// Active factors that cannot be challenged without the old provider: no phone on
/// file, or reverted to it.
pub(super) const DEPEND_ON_LEGACY: &str = "
    SELECT COUNT(*) FROM factors
    WHERE status = 'active' AND legacy_provider_user_id IS NOT NULL
      AND (phone_ciphertext IS NULL OR reverted)";
