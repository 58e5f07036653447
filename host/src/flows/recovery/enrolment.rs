//! A recovery's last step: the login, parked, enrols a new factor under the
//! recovery's own proof, and the recovery completes with it.

use serde_json::json;

use super::*;

impl AccountRecovery<'_> {
    /// Parks the login until a new factor is enrolled, and issues this login the
    /// proof its enrolment needs (the password and the recovery's own proof, for this
    /// recovery only). A re-park keeps the proof the login already holds.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn enrol(
        &self,
        mut verdict: Verdict,
        login: &StoredLogin,
        recovery_id: &str,
        since_ms: u64,
        rule: &str,
        state: &str,
        proof: EnrolProof<'_>,
    ) -> Result<Verdict, GatewayError> {
        let (proof_id, proof_token) = match proof {
            EnrolProof::Held(id) => (id.map(str::to_owned), None),
            EnrolProof::Issue(path_proof) => {
                let user_id = login.user.as_ref().map(|u| u.id.as_str()).unwrap_or("");
                let (token, id) = self.login.issue_proof(
                    user_id,
                    &[crate::flows::proof::Shown::Password, path_proof],
                    Some(recovery_id),
                )?;
                (Some(id), Some(token))
            }
        };
        let token = self.login.park(
            &verdict,
            login,
            "",
            None,
            rule,
            state,
            None,
            Some(PendingEnrolment {
                recovery_id: recovery_id.to_owned(),
                since_ms,
                proof_id,
            }),
        )?;
        verdict.proof_token = proof_token;
        verdict.effects.clear();
        verdict.decision = Decision::Challenge {
            kind: ChallengeKind::MfaEnrollment,
            factor_id: None,
            via: None,
            destination: None,
            attempts_left: None,
            state: String::new(),
            rule: rule.to_owned(),
        };
        verdict.resume_token = Some(token);
        Ok(verdict)
    }

    /// The recovery completes with the new factor, in one transaction: the factor
    /// active, the others disabled, sessions revoked, every channel told, audited.
    /// False when the recovery ended meanwhile; a conflict when the confirmed factor
    /// went.
    fn complete(
        &self,
        user: &crate::model::DirectoryUser,
        new: &crate::state::factors::Factor,
        recovery_id: &str,
        told: &[crate::state::recovery::Notice],
        now_ms: u64,
    ) -> Result<bool, crate::state::StoreError> {
        let sql = self.state.sql();
        let dialect = sql.dialect();
        let was_confirmed = new.status == FactorStatus::Confirmed;
        crate::state::portable::transact(sql, |tx| {
            crate::state::factors::rows::lock_factor_set(tx, dialect, &user.id)?;
            if !store::set_status(
                tx,
                recovery_id,
                RecoveryStage::Enrolling,
                RecoveryStage::Completed,
                "new factor enrolled",
                now_ms,
            )? {
                return Ok(false);
            }
            // The confirmed phone must still be there: otherwise nothing happens, the
            // lost factor included (it stays the user's factor).
            if store::activate_confirmed(tx, &user.id, &new.id, now_ms)? != 1 && was_confirmed {
                return Err(crate::state::StoreError::Conflict(
                    "the confirmed factor went meanwhile".into(),
                ));
            }
            let disabled = store::disable_other_factors(tx, &user.id, &new.id, now_ms)?;
            store::revoke_sessions(tx, &user.id, now_ms)?;
            store::enqueue(tx, told, now_ms, recovery_id)?;
            crate::state::audit::append(
                sql,
                tx,
                &AuditEntry::new(
                    now_ms,
                    format!("user:{}", user.id),
                    "recovery-completed",
                    &user.id,
                )
                .details(json!({
                    "recovery": recovery_id,
                    "new_factor": new.id,
                    "factors_disabled": disabled,
                    "notices": told.len(),
                })),
            )?;
            Ok(true)
        })
    }

    /// `/v1/continue` after a recovery's enrolment: `{"enrollment_id": …}` names the
    /// factor the user just enrolled and confirmed. The recovery completes (old
    /// factors disabled, sessions revoked, every channel told) and the rule resumes.
    pub(in crate::flows) fn check_enrolment(
        &self,
        record: &ResumeRecord,
        pending: &PendingEnrolment,
        result: &str,
    ) -> Result<Result<String, Box<Verdict>>, GatewayError> {
        let now_ms = self.clock.now_ms();
        let enrolled = serde_json::from_str::<serde_json::Value>(result)
            .ok()
            .and_then(|v| v["enrollment_id"].as_str().map(str::to_owned));
        let factors = self.state.factors_of(&record.subject)?;
        // Only a factor this login's own proof enrolled completes its recovery.
        let started_by = match enrolled.as_deref() {
            Some(id) => crate::state::proofs::enrolled_by(self.state.sql(), id)?,
            None => None,
        };
        let ours = started_by.is_some() && started_by == pending.proof_id;
        // `confirmed` waits for this; `active` is a factor confirmed before that status.
        let new = enrolled.as_deref().filter(|_| ours).and_then(|id| {
            factors.iter().find(|f| {
                f.id == id
                    && matches!(f.status, FactorStatus::Confirmed | FactorStatus::Active)
                    && f.enrolled_at_ms >= pending.since_ms
            })
        });
        let mut base = crate::flows::challenge::answer_only(record);
        // A recovery that ended meanwhile (cancelled by its owner, superseded, past its
        // window) is not one to enrol for: its proof enrols nothing any more, so the
        // login is told so rather than asked to enrol again.
        let open = store::recovery_by_id(self.state.sql(), &pending.recovery_id)?
            .is_some_and(|r| r.status == RecoveryStage::Enrolling && now_ms < r.expires_at_ms);
        if !open {
            return Ok(Err(Box::new(denied(
                base,
                "recovery_cancelled",
                "This recovery was cancelled; please sign in again.",
                false,
            ))));
        }
        let Some(new) = new else {
            // Not yet: the same enrolment under a new token (each token works once).
            base.effects = record.pending.clone();
            base.evidence = record.evidence.clone();
            let verdict = self.enrol(
                base,
                &record.login,
                &pending.recovery_id,
                pending.since_ms,
                &record.rule,
                &record.state,
                EnrolProof::Held(pending.proof_id.as_deref()),
            )?;
            return Ok(Err(Box::new(verdict)));
        };
        let Some(user) = &record.login.user else {
            return Ok(Err(Box::new(pending_answer(base))));
        };
        let sql = self.state.sql();
        let told = notices(
            user,
            &factors,
            &pending.recovery_id,
            "recovery-completed",
            "Your account was recovered: a new second factor was set up, the old one no \
             longer works, and every session was signed out.",
            None,
            DISPUTE,
        );
        let completed = self.complete(user, new, &pending.recovery_id, &told, now_ms);
        let completed = match completed {
            Err(crate::state::StoreError::Conflict(_)) => false,
            other => other?,
        };
        if !completed {
            // Cancelled (or expired) while the user was enrolling.
            return Ok(Err(Box::new(denied(
                base,
                "recovery_cancelled",
                "This recovery was cancelled; please sign in again.",
                false,
            ))));
        }
        store::reset_failures(sql, &user.id)?;
        Ok(Ok(json!({
            "enrolled": true,
            "factor-id": new.id,
            "recovery": pending.recovery_id,
        })
        .to_string()))
    }
}
