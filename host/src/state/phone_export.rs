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

use super::{SqlBacked, StoreError, factors};

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

/// Factors another run holds now (its lease not yet run out), in the cohort if named:
/// how many, and until when. `$1` now, `$2` this run, `$3` cohort or NULL.
pub(super) const HELD: &str = "
    SELECT COUNT(*), COALESCE(MAX(b.lease_until_ms), 0)
    FROM mfa_backfill b JOIN factors f ON f.id = b.factor_id
    WHERE b.status = 'claimed' AND b.lease_until_ms > $1 AND b.run_id <> $2
      AND (CAST($3 AS TEXT) IS NULL OR f.cohort = $3)";

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

/// The backfill's reads and writes, once for both backends.
pub(super) mod rows {
    use super::super::factors::Factor;
    use super::super::portable::{SqlStore, Val, transact};
    use super::super::{StoreError, sql_time};
    use super::*;
    use crate::mfa::sealed::Sealed;

    fn count(v: Option<&Val>) -> u64 {
        v.and_then(Val::as_int)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
    }

    fn limit(n: usize) -> Val {
        Val::int(i64::try_from(n).unwrap_or(i64::MAX))
    }

    pub fn candidates(
        store: &dyn SqlStore,
        cohort: Option<&str>,
        now_ms: u64,
        retry_failed: bool,
        max: usize,
        run_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = transact(store, |tx| {
            tx.query(
                CANDIDATES,
                &[
                    Val::Text(cohort.map(str::to_owned)),
                    Val::int(sql_time(now_ms)),
                    Val::Bool(Some(retry_failed)),
                    limit(max),
                    Val::text(run_id),
                ],
            )
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().and_then(Val::into_text))
            .collect())
    }

    pub fn claim(
        store: &dyn SqlStore,
        ids: &[String],
        lease: &Lease,
        retry_failed: bool,
    ) -> Result<Vec<String>, StoreError> {
        transact(store, |tx| {
            let mut taken = Vec::with_capacity(ids.len());
            for id in ids {
                // Another run inserting the same factor first makes this one wait for
                // it (PostgreSQL), then find the row held: nothing returned.
                let rows = tx.query(
                    CLAIM,
                    &[
                        Val::text(id),
                        Val::text(&lease.token),
                        Val::int(sql_time(lease.until_ms)),
                        Val::text(&lease.run_id),
                        Val::int(sql_time(lease.now_ms)),
                        Val::Bool(Some(retry_failed)),
                    ],
                )?;
                taken.extend(
                    rows.into_iter()
                        .filter_map(|r| r.into_iter().next().and_then(Val::into_text)),
                );
            }
            Ok(taken)
        })
    }

    pub fn left(store: &dyn SqlStore, cohort: Option<&str>) -> Result<u64, StoreError> {
        super::super::portable::count(store, LEFT, &[Val::Text(cohort.map(str::to_owned))])
    }

    pub fn begin_export(
        store: &dyn SqlStore,
        factor_id: &str,
        provider_user_id: &str,
        lease: &Lease,
        since_ms: u64,
        quota: u64,
    ) -> Result<ExportPermit, StoreError> {
        // One transaction, durable before the call is made: that is the ledger's point.
        transact(store, |tx| {
            let held = tx.execute(
                RENEW,
                &[
                    Val::text(factor_id),
                    Val::text(&lease.token),
                    Val::int(sql_time(lease.until_ms)),
                ],
            )?;
            if held == 0 {
                return Ok(ExportPermit::LostLease);
            }
            let counted = tx.query(
                COUNTED_EXPORTS,
                &[Val::text(provider_user_id), Val::int(sql_time(since_ms))],
            )?;
            if count(counted.first().and_then(|r| r.first())) >= quota {
                return Ok(ExportPermit::Quota);
            }
            let id = tx.query(
                RECORD_EXPORT,
                &[
                    Val::text(factor_id),
                    Val::text(provider_user_id),
                    Val::text(&lease.run_id),
                    Val::int(sql_time(lease.now_ms)),
                ],
            )?;
            let id = id
                .first()
                .and_then(|r| r.first())
                .and_then(Val::as_int)
                .ok_or_else(|| StoreError::Backend("the ledger gave no id".into()))?;
            Ok(ExportPermit::Go(id))
        })
    }

    pub fn finish_export(
        store: &dyn SqlStore,
        id: i64,
        outcome: ExportOutcome,
    ) -> Result<(), StoreError> {
        transact(store, |tx| {
            tx.execute(FINISH_EXPORT, &[Val::int(id), Val::text(outcome.name())])
        })?;
        Ok(())
    }

    pub fn store_phone(
        store: &dyn SqlStore,
        read: &Factor,
        sealed: &Sealed,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        Ok(transact(store, |tx| {
            tx.execute(
                STORE_PHONE,
                &[
                    Val::text(&read.id),
                    Val::text(&read.user_id),
                    Val::Bytes(Some(sealed.ciphertext.clone())),
                    Val::Bytes(Some(sealed.nonce.clone())),
                    Val::text(&sealed.key_id),
                    Val::int(sql_time(now_ms)),
                    Val::Text(read.legacy_provider_user_id.clone()),
                    Val::int(sql_time(read.updated_at_ms)),
                ],
            )
        })? == 1)
    }

    pub fn finish(
        store: &dyn SqlStore,
        factor_id: &str,
        token: &str,
        status: BackfillStatus,
        reason: Option<&str>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        Ok(transact(store, |tx| {
            tx.execute(
                FINISH_BACKFILL,
                &[
                    Val::text(factor_id),
                    Val::text(token),
                    Val::text(status.name()),
                    Val::Text(reason.map(str::to_owned)),
                    Val::int(sql_time(now_ms)),
                ],
            )
        })? == 1)
    }

    pub fn revert(
        store: &dyn SqlStore,
        user_id: Option<&str>,
        cohort: Option<&str>,
        actor: &str,
        now_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        transact(store, |tx| {
            let rows = tx.query(
                REVERT,
                &[
                    Val::Text(user_id.map(str::to_owned)),
                    Val::Text(cohort.map(str::to_owned)),
                    Val::int(sql_time(now_ms)),
                ],
            )?;
            let mut reverted = Vec::with_capacity(rows.len());
            for row in rows {
                let mut row = row.into_iter();
                let factor = row.next().and_then(Val::into_text).unwrap_or_default();
                let user = row.next().and_then(Val::into_text).unwrap_or_default();
                tx.execute(
                    AUDIT,
                    &[
                        Val::int(sql_time(now_ms)),
                        Val::text(actor),
                        Val::text("mfa.revert"),
                        Val::text(user),
                        Val::text(format!("factor {factor} back on the old provider")),
                    ],
                )?;
                reverted.push(factor);
            }
            Ok(reverted)
        })
    }

    pub fn status(store: &dyn SqlStore) -> Result<Vec<CohortStatus>, StoreError> {
        let rows = transact(store, |tx| tx.query(STATUS, &[]))?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let n = |i: usize| count(row.get(i));
                CohortStatus {
                    cohort: row
                        .first()
                        .and_then(Val::as_text)
                        .unwrap_or_default()
                        .to_owned(),
                    factors: n(1),
                    new_provider: n(2),
                    exported: n(3),
                    pending: n(4),
                    failing: n(5),
                    reverted: n(6),
                }
            })
            .collect())
    }

    /// Factors other runs hold now: (how many, until when, ms).
    pub fn held(
        store: &dyn SqlStore,
        cohort: Option<&str>,
        now_ms: u64,
        run_id: &str,
    ) -> Result<(u64, u64), StoreError> {
        let rows = transact(store, |tx| {
            tx.query(
                HELD,
                &[
                    Val::int(sql_time(now_ms)),
                    Val::text(run_id),
                    Val::Text(cohort.map(str::to_owned)),
                ],
            )
        })?;
        let row = rows.first();
        Ok((
            count(row.and_then(|r| r.first())),
            count(row.and_then(|r| r.get(1))),
        ))
    }

    pub fn depending_on_legacy(store: &dyn SqlStore) -> Result<u64, StoreError> {
        super::super::portable::count(store, DEPEND_ON_LEGACY, &[])
    }
}

/// The MFA phone export's state (see `backfill`): one implementation for both
/// backends (`phone_export::rows`).
pub trait PhoneExportStore: SqlBacked {
    /// Up to `limit` factor ids the backfill may take up, by id.
    fn backfill_candidates(
        &self,
        cohort: Option<&str>,
        now_ms: u64,
        retry_failed: bool,
        limit: usize,
        run_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        rows::candidates(self.sql(), cohort, now_ms, retry_failed, limit, run_id)
    }
    /// Takes up `ids` under one lease, in one transaction; returns those taken (not
    /// those another run took first).
    fn claim_backfill(
        &self,
        ids: &[String],
        lease: &Lease,
        retry_failed: bool,
    ) -> Result<Vec<String>, StoreError> {
        rows::claim(self.sql(), ids, lease, retry_failed)
    }
    /// Old-provider factors without a phone, not reverted, in the cohort if named.
    fn backfill_left(&self, cohort: Option<&str>) -> Result<u64, StoreError> {
        rows::left(self.sql(), cohort)
    }
    /// Records an export attempt before it is made, in one transaction with the quota
    /// check and the renewal of the factor's lease until `lease.until_ms` (so no other
    /// run can take it up while the call is in flight).
    fn begin_export(
        &self,
        factor_id: &str,
        provider_user_id: &str,
        lease: &Lease,
        since_ms: u64,
        quota: u64,
    ) -> Result<ExportPermit, StoreError> {
        rows::begin_export(
            self.sql(),
            factor_id,
            provider_user_id,
            lease,
            since_ms,
            quota,
        )
    }
    fn finish_export(&self, id: i64, outcome: ExportOutcome) -> Result<(), StoreError> {
        rows::finish_export(self.sql(), id, outcome)
    }
    /// Stores an exported phone if the factor is still as `read` (see
    /// `STORE_PHONE`); false when its user changed it meanwhile.
    fn store_exported_phone(
        &self,
        read: &factors::Factor,
        sealed: &crate::mfa::sealed::Sealed,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        rows::store_phone(self.sql(), read, sealed, now_ms)
    }
    /// Ends a factor's backfill if `token` still holds it.
    fn finish_backfill(
        &self,
        factor_id: &str,
        token: &str,
        status: BackfillStatus,
        reason: Option<&str>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        rows::finish(self.sql(), factor_id, token, status, reason, now_ms)
    }
    /// Reverts a user's or a cohort's factors to the old provider, audited, in one
    /// transaction; returns the factor ids.
    fn revert_factors(
        &self,
        user_id: Option<&str>,
        cohort: Option<&str>,
        actor: &str,
        now_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        rows::revert(self.sql(), user_id, cohort, actor, now_ms)
    }
    /// Factors other runs hold now (their lease not run out): how many, until when.
    fn backfill_held(
        &self,
        cohort: Option<&str>,
        now_ms: u64,
        run_id: &str,
    ) -> Result<(u64, u64), StoreError> {
        rows::held(self.sql(), cohort, now_ms, run_id)
    }
    fn mfa_status(&self) -> Result<Vec<CohortStatus>, StoreError> {
        rows::status(self.sql())
    }
    /// Active factors that cannot be challenged without the old provider.
    fn factors_depending_on_legacy(&self) -> Result<u64, StoreError> {
        rows::depending_on_legacy(self.sql())
    }
}
