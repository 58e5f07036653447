//! What a gateway embeds: a pipeline plus its state. It resolves the directory user,
//! evaluates, applies the effects of an allowed login in one transaction, and parks
//! a redirected login behind a resume token.

mod challenge;
pub mod clock;
pub mod devices;
pub mod enroll;
mod guessing;
mod open_codes;
pub mod proof;
mod recovery;
pub mod resume;
pub mod support;

use crate::model::{ApplyReport, Effect, LegacyStores, LoginError, Services};
use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::config::PipelineConfig;
use crate::error::LoadError;
use crate::model::LoginAttempt;
use crate::runtime::engine::Runtime;
use crate::runtime::pipeline::{Pipeline, ResumePoint};
use crate::runtime::verdict::{ChallengeKind, Decision, EnrolmentCheck, Verdict};
use crate::state::login_stats::{LoginMark, LoginStats};
use crate::state::resume_tokens::{
    PendingChallenge, PendingEnrolment, ResumeRecord, StoredLogin, TakenResume,
};
use crate::state::{
    EffectBatch, SqliteLegacyStores, SqliteState, StateStore, StoreError, sqlite_path,
};
use clock::Clock;
use resume::{ResumeRefusal, ResumeTokens};

const DAY_MS: u64 = 24 * 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("resume refused: {0}")]
    Refused(#[from] ResumeRefusal),
    #[error("{0}")]
    Config(String),
    /// The login cannot be evaluated as given (the caller's mistake: a 400, exit 2).
    #[error(transparent)]
    Login(#[from] LoginError),
}

pub struct Gateway {
    pipeline: Arc<Pipeline>,
    state: Arc<dyn StateStore>,
    services: Services,
    tokens: ResumeTokens,
    apply_effects: bool,
    /// Perform nothing either: no code sent, no resume token written (`run --dry-run`).
    dry_run: bool,
    clock: Arc<dyn Clock>,
    /// How far a login's `time_ms` may be from the host's clock.
    max_skew_ms: u64,
    /// Writes the bookkeeping of logins without effects behind; `None`: with each login.
    login_stats: Option<LoginStats>,
    /// How the host performs second-factor challenges.
    challenges: challenge::ChallengeLimits,
    /// Consecutive wrong codes per factor across challenges (`[mfa]`).
    guesses: guessing::GuessLimits,
    /// How long a recognised device's token lasts (`[mfa] device_token_days`).
    device_ttl_ms: u64,
    enrolment: enroll::Enrolment,
    /// Account recovery (`[recovery]`); `None`: nothing to recover with.
    recovery: Option<recovery::RecoveryPolicy>,
    /// The waiting period of an approved dangerous support action.
    support_wait_hours: u64,
}

impl Gateway {
    pub fn new(
        pipeline: Arc<Pipeline>,
        state: Arc<dyn StateStore>,
        legacy: Arc<dyn LegacyStores>,
        tokens: ResumeTokens,
    ) -> Self {
        let services = Services {
            directory: state.clone(),
            legacy,
            sms: Services::none().sms,
        };
        Self {
            pipeline,
            state,
            services,
            tokens,
            apply_effects: true,
            dry_run: false,
            clock: clock::system(),
            max_skew_ms: crate::config::LoginSettings::default().max_clock_skew_seconds * 1000,
            login_stats: None,
            challenges: challenge::ChallengeLimits::new(&crate::config::MfaSettings::default()),
            guesses: guessing::GuessLimits::new(&crate::config::MfaSettings::default()),
            device_ttl_ms: crate::config::MfaSettings::default().device_token_days * DAY_MS,
            enrolment: enroll::Enrolment {
                policy: Default::default(),
                keys: None,
                limits: enroll::EnrolmentLimits::new(&Default::default()),
            },
            recovery: None,
            support_wait_hours: crate::config::SupportSettings::default().wait_hours,
        }
    }

    /// Loads the pipeline and opens the stores a config names. Without `[state]`, the
    /// directory is a private in-memory one and no legacy store is configured.
    pub fn open(config: &PipelineConfig, runtime: &Runtime) -> Result<Self, GatewayError> {
        let pipeline = Arc::new(runtime.load(config)?);
        let (state, legacy) = open_stores(config)?;
        crate::state::passwords::configure(config.passwords);
        let mut gateway = Self::new(pipeline, state, legacy, resume_tokens(config)?);
        gateway.max_skew_ms = config.login.max_clock_skew_seconds * 1000;
        gateway = gateway.with_mfa_limits(&config.mfa);
        gateway.support_wait_hours = config.support.wait_hours;
        if let Some(settings) = &config.recovery {
            gateway.recovery = Some(
                recovery::RecoveryPolicy::new(settings.clone())
                    .map_err(|e| GatewayError::Config(format!("[recovery]: {e}")))?,
            );
        }
        // Retiring the old provider: refused while any active factor still needs it.
        if config.mfa.verify.is_some() && config.mfa.legacy_sms.is_none() {
            let depending = gateway.state.factors_depending_on_legacy()?;
            if depending > 0 {
                return Err(GatewayError::Config(format!(
                    "the config has no [mfa.legacy_sms], but {depending} active SMS factors \
                     still depend on the old provider (no phone on file, or reverted); keep it \
                     until `portcullis mfa status` shows none"
                )));
            }
        }
        // Phones are sealed for, and unsealed by, the new provider only.
        let keys = match &config.mfa.verify {
            Some(_) => {
                Some(Arc::new(config.mfa.key_ring().map_err(|e| {
                    GatewayError::Config(format!("[mfa] keys: {e}"))
                })?))
            }
            None => None,
        };
        gateway.enrolment = enroll::Enrolment {
            policy: crate::mfa::phone::PhonePolicy {
                allowed_calling_codes: config.mfa.allowed_calling_codes.clone(),
            },
            keys: keys.clone(),
            limits: enroll::EnrolmentLimits::new(&config.mfa),
        };
        if let Some(providers) = crate::providers::sms::SmsProviders::from_settings(
            &config.mfa,
            gateway.state.clone(),
            keys,
        )
        .map_err(GatewayError::Config)?
        {
            gateway.services.sms = Arc::new(providers);
        }
        let flush_ms = config.state.as_ref().map_or(0, |s| s.login_stats_flush_ms);
        if flush_ms > 0 {
            gateway.login_stats = Some(LoginStats::start(gateway.state.clone(), flush_ms));
        }
        Ok(gateway)
    }

    /// Writes the login statistics waiting to be written behind (tests, shutdown);
    /// returns how many logins it counted.
    pub fn flush_login_stats(&self) -> Result<usize, StoreError> {
        self.login_stats.as_ref().map_or(Ok(0), LoginStats::flush)
    }

    /// Decide expiry and skew by this clock instead of the system's (tests, replay).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Serve capability calls from `services` (a recording, a recorder) instead.
    pub fn with_services(mut self, services: Services) -> Self {
        self.services = services;
        self
    }

    /// Second-factor limits from `[mfa]` (`open` reads them from the config).
    pub fn with_mfa_limits(mut self, settings: &crate::config::MfaSettings) -> Self {
        self.challenges = challenge::ChallengeLimits::new(settings);
        self.guesses = guessing::GuessLimits::new(settings);
        self.device_ttl_ms = settings.device_token_days.saturating_mul(DAY_MS);
        self
    }

    /// Evaluate only: allowed logins change nothing (replays, dry runs).
    pub fn without_applying(mut self) -> Self {
        self.apply_effects = false;
        self
    }

    /// Evaluate only and perform nothing: no effect applied, no code sent, no login
    /// parked behind a resume token (`run --dry-run`). A challenge or redirect comes
    /// back as the rules decided it, without a token.
    pub fn dry_run(mut self) -> Self {
        self.apply_effects = false;
        self.dry_run = true;
        self
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Evaluates a login attempt end to end. The directory user is always the one the
    /// host finds for the email, whatever the attempt carries.
    pub fn login(&self, attempt: &LoginAttempt) -> Result<Verdict, GatewayError> {
        self.login_owned(attempt.clone())
    }

    /// As [`Gateway::login`], taking the attempt: a caller done with it (`serve`,
    /// which parsed it from the request) saves copying it.
    pub fn login_owned(&self, mut attempt: LoginAttempt) -> Result<Verdict, GatewayError> {
        let now_ms = self.clock.now_ms();
        if attempt.time_ms.abs_diff(now_ms) > self.max_skew_ms {
            return Err(LoginError::Invalid(format!(
                "time_ms is {} s away from the host's clock (at most {} s allowed; send the time of the attempt in ms since 1970; `run --now` stamps recorded logins with the host's clock)",
                attempt.time_ms.abs_diff(now_ms) / 1000,
                self.max_skew_ms / 1000
            ))
            .into());
        }
        match self.services.directory.find_by_email(&attempt.email) {
            Ok(users) => attempt.user = users.into_iter().next(),
            Err(e) => {
                return Ok(unavailable(
                    &attempt.transaction_id,
                    format!("directory: {}", e.message),
                ));
            }
        }
        attempt.device = self.recognise_device(&attempt);
        self.recovery().prepare(&mut attempt, now_ms);
        let verdict = self.pipeline.evaluate(&attempt, &self.services);
        if matches!(verdict.decision, Decision::Recover { .. }) && self.apply_effects {
            return self.recovery().perform(verdict, &attempt);
        }
        let password_hash = needs_password_hash(&verdict.effects)
            .then(|| {
                attempt
                    .password
                    .as_ref()
                    .map(|p| crate::state::passwords::hash_argon2id(p.expose_secret()))
            })
            .flatten();
        let verified = verdict.evidence.directory_password_verified;
        let password_proven = verdict
            .evidence
            .password_proven(attempt.user.as_ref().map(|u| u.id.as_str()));
        let stored = StoredLogin::from_attempt(&attempt);
        let verdict = self.settle(verdict, &stored, &attempt.new_user_id(), password_hash)?;
        // An imported legacy hash becomes argon2id at its first successful sign-in.
        if verified
            && verdict.applied.is_some()
            && matches!(verdict.decision, Decision::Allow)
            && let (Some(user), Some(password)) = (&attempt.user, &attempt.password)
            && let Err(e) = self.state.upgrade_password(&user.id, password)
        {
            // The login stands; the upgrade is tried again at the next one.
            tracing::warn!(user = %user.id, "upgrading the password hash failed: {e}");
        }
        Ok(self.with_sign_in_proof(verdict, password_proven, false))
    }

    /// Resumes a redirected login with the token it was given and what the redirect
    /// target reported (`result`, JSON). The token works once, for its own
    /// transaction, before it expires by the host's clock.
    pub fn resume(
        &self,
        token: &str,
        transaction_id: &str,
        result: &str,
    ) -> Result<Verdict, GatewayError> {
        let now_ms = self.clock.now_ms();
        let jti = self.tokens.verify(token, transaction_id)?;
        let record = match self.state.take_resume(&jti, now_ms)? {
            TakenResume::Taken(record) => record,
            TakenResume::Unknown => return Err(ResumeRefusal::Unknown.into()),
            TakenResume::AlreadyUsed => return Err(ResumeRefusal::Replayed.into()),
            TakenResume::Expired => return Err(ResumeRefusal::Expired.into()),
        };
        if record.transaction_id != transaction_id {
            return Err(ResumeRefusal::Mismatch("another transaction".into()).into());
        }
        // What the sign-in showed: a passed factor gets it a proof and, when allowed, a
        // device token.
        let mut factor_shown = false;
        let mut enrolled = None;
        let result = match (&record.challenge, &record.enrolment) {
            // The code decides, checked by the provider that sent it; the rule hears
            // only that it passed.
            (Some(challenge), _) => match self.check_challenge(&record, challenge, result)? {
                challenge::Checked::Passed(result) => {
                    self.recovery().factor_passed(&record.subject);
                    factor_shown = true;
                    result
                }
                challenge::Checked::Answer(verdict) => return Ok(*verdict),
            },
            // A recovery completes once a new factor is enrolled.
            (None, Some(enrolment)) => match self
                .recovery()
                .check_enrolment(&record, enrolment, result)?
            {
                Ok(result) => {
                    enrolled = Some(EnrolmentCheck::Completed {
                        result: serde_json::from_str(&result)
                            .unwrap_or(serde_json::Value::String(result.clone())),
                    });
                    result
                }
                Err(verdict) => {
                    return Ok(Verdict {
                        enrolment: Some(EnrolmentCheck::Answered),
                        ..*verdict
                    });
                }
            },
            (None, None) => result.to_owned(),
        };
        let attempt = record.login.to_attempt(now_ms);
        let from = ResumePoint {
            rule: record.rule.clone(),
            rule_index: record.rule_index,
            state: record.state.clone(),
            result,
        };
        let verdict = self
            .pipeline
            .resume(
                &attempt,
                &self.services,
                &from,
                record.pending.clone(),
                record.evidence.clone(),
            )
            .map_err(|e| ResumeRefusal::Mismatch(e.0))?;
        let password_proven = verdict
            .evidence
            .password_proven(record.login.user.as_ref().map(|u| u.id.as_str()));
        // A user who must change their password does that first, whatever the rules said.
        let verdict = match self.reset_before_allow(verdict, &record)? {
            Ok(verdict) => verdict,
            Err(reset) => {
                return Ok(Verdict {
                    enrolment: enrolled,
                    ..reset
                });
            }
        };
        let mut verdict = self.settle(
            verdict,
            &record.login,
            &attempt.new_user_id(),
            record.password_hash.clone(),
        )?;
        verdict.enrolment = enrolled;
        if factor_shown
            && self.apply_effects
            && matches!(verdict.decision, Decision::Allow)
            && verdict.applied.is_some()
            && record.login.user.is_some()
        {
            verdict.device_token = self.issue_device_token(&record.subject);
        }
        Ok(self.with_sign_in_proof(verdict, password_proven, factor_shown))
    }

    /// An allowed sign-in where second factors are enrolled gets a proof token of
    /// what it showed (the password, and the factor when a challenge passed): what the
    /// enrolment and recovery-code endpoints take instead of a user id. Elsewhere (no
    /// new SMS provider configured) nothing is issued, and the login writes nothing more.
    fn with_sign_in_proof(&self, mut verdict: Verdict, password: bool, factor: bool) -> Verdict {
        if !password
            || self.enrolment.keys.is_none()
            || !self.apply_effects
            || !matches!(verdict.decision, Decision::Allow)
        {
            return verdict;
        }
        // Only for a login that applied its own batch now: a transaction id applied
        // before reports the user *that* login signed in, who may be someone else (an
        // attacker reusing a victim's id must not get a proof for the victim).
        let Some(user_id) = verdict
            .applied
            .as_ref()
            .filter(|a| a.applied)
            .and_then(|a| a.user_id.clone())
        else {
            return verdict;
        };
        let mut shown = vec![proof::Shown::Password];
        if factor {
            shown.push(proof::Shown::Factor);
        }
        match self.issue_proof(&user_id, &shown, None) {
            Ok((token, _)) => verdict.proof_token = Some(token),
            // The sign-in stands; only what needs the proof is unavailable.
            Err(e) => tracing::warn!("issuing a sign-in proof failed: {e}"),
        }
        verdict
    }

    /// After the pipeline: apply an allow, park a redirect, leave the rest.
    fn settle(
        &self,
        mut verdict: Verdict,
        login: &StoredLogin,
        new_user_id: &str,
        password_hash: Option<String>,
    ) -> Result<Verdict, GatewayError> {
        match &verdict.decision {
            Decision::Allow if self.apply_effects => {
                let batch = EffectBatch {
                    transaction_id: login.transaction_id.clone(),
                    time_ms: login.time_ms,
                    user_id: login.user.as_ref().map(|u| u.id.clone()),
                    new_user_id: new_user_id.to_owned(),
                    effects: verdict.effects.clone(),
                    password_hash,
                };
                // Nothing but bookkeeping to store: written behind.
                if let Some(stats) = &self.login_stats
                    && batch
                        .effects
                        .iter()
                        .all(|e| matches!(e, Effect::AddClaim { .. }))
                {
                    stats.record(LoginMark {
                        transaction_id: batch.transaction_id,
                        user_id: batch.user_id.clone(),
                        time_ms: batch.time_ms,
                        sightings: self.recovery().sightings_of(login),
                    });
                    verdict.applied = Some(ApplyReport {
                        applied: true,
                        user_id: batch.user_id,
                        created_user: false,
                        outbox_messages: 0,
                    });
                    return Ok(verdict);
                }
                match self.state.apply(&batch) {
                    Ok(report) => {
                        verdict.applied = Some(report);
                        self.recovery().remember_sightings(login);
                    }
                    Err(e) => {
                        tracing::error!(transaction = %login.transaction_id, "applying effects failed: {e}");
                        return Ok(unavailable(&login.transaction_id, e.to_string())
                            .with_trace(verdict.trace));
                    }
                }
            }
            Decision::Redirect { rule, state, .. } if !self.dry_run => {
                let (rule, state) = (rule.clone(), state.clone());
                let token = self.park(
                    &verdict,
                    login,
                    new_user_id,
                    password_hash,
                    &rule,
                    &state,
                    None,
                    None,
                )?;
                verdict.resume_token = Some(token);
            }
            Decision::Challenge {
                kind: ChallengeKind::Mfa,
                factor_id: Some(_),
                via: Some(_),
                ..
            } if !self.dry_run => {
                return self.challenge(verdict, login, new_user_id, password_hash);
            }
            // A recovery is performed for a login's first evaluation only; asked for
            // anywhere else (a resumed rule), it lets nobody in.
            Decision::Recover { .. } if self.apply_effects => {
                return Ok(challenge::denied(
                    verdict,
                    "recovery_pending",
                    "The recovery could not be continued; please sign in again.",
                    true,
                ));
            }
            _ => {}
        }
        Ok(verdict)
    }
}

impl Gateway {
    /// Parks a login behind a fresh resume token bound to its transaction and user;
    /// returns the token.
    /// `challenge` / `enrolment`: what the host performs before the token resumes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn park(
        &self,
        verdict: &Verdict,
        login: &StoredLogin,
        new_user_id: &str,
        password_hash: Option<String>,
        rule: &str,
        state: &str,
        challenge: Option<PendingChallenge>,
        enrolment: Option<PendingEnrolment>,
    ) -> Result<String, GatewayError> {
        let rule_index = self
            .pipeline
            .rules()
            .iter()
            .position(|r| r.settings.name == rule)
            .expect("a redirect or challenge comes from a rule of this pipeline");
        let jti = crate::model::random_id();
        let subject = login
            .user
            .as_ref()
            .map(|u| u.id.clone())
            .unwrap_or_else(|| new_user_id.to_owned());
        let expires_at_ms = self.clock.now_ms().saturating_add(self.tokens.ttl_ms);
        self.state.save_resume(&ResumeRecord {
            jti: jti.clone(),
            transaction_id: login.transaction_id.clone(),
            subject,
            rule: rule.to_owned(),
            rule_index,
            state: state.to_owned(),
            login: login.clone(),
            pending: verdict.effects.clone(),
            password_hash,
            expires_at_ms,
            evidence: verdict.evidence.clone(),
            challenge,
            enrolment,
        })?;
        Ok(self.tokens.issue(&jti, &login.transaction_id))
    }
}

fn needs_password_hash(effects: &[Effect]) -> bool {
    effects.iter().any(|e| {
        matches!(
            e,
            Effect::CreateUser {
                password_from_login: true,
                ..
            }
        )
    })
}

/// A login that could not be evaluated or recorded because state is unavailable:
/// fail closed, and say it is worth retrying.
fn unavailable(transaction_id: &str, detail: String) -> Verdict {
    Verdict {
        transaction_id: transaction_id.to_owned(),
        decision: Decision::Deny {
            code: "state_unavailable".into(),
            message: "The login could not be completed; please try again.".into(),
            retryable: true,
        },
        effects: Vec::new(),
        trace: Vec::new(),
        applied: None,
        resume_token: None,
        proof_token: None,
        device_token: None,
        error: Some(crate::model::redact::redact_text(&detail).into_owned()),
        evidence: Default::default(),
        recovery: None,
        enrolment: None,
    }
}

/// The directory store and the legacy stores a config names.
type Stores = (Arc<dyn StateStore>, Arc<dyn LegacyStores>);

/// The stores a config names, for jobs outside a gateway (`audit verify`).
pub fn open_stores_of(config: &PipelineConfig) -> Result<Stores, GatewayError> {
    open_stores(config)
}

pub(crate) fn open_stores(config: &PipelineConfig) -> Result<Stores, GatewayError> {
    let audit_keys = config.audit.keys().map_err(GatewayError::Config)?;
    if audit_keys.is_none() && (config.recovery.is_some() || !config.support.agents.is_empty()) {
        tracing::warn!(
            "the audit log is not keyed: anyone who can write the database can rewrite it (set [audit] key_env or key_file)"
        );
    }
    let Some(settings) = &config.state else {
        return Ok((
            Arc::new(SqliteState::in_memory()?.with_audit_keys(audit_keys)),
            Arc::new(SqliteLegacyStores::new(Default::default())),
        ));
    };
    let state = crate::state::open_state_keyed(&settings.directory, &config.base_dir, audit_keys)?;
    let legacy = crate::state::LegacyProducts::open(&settings.legacy, &config.base_dir)?;
    Ok((state, Arc::new(legacy)))
}

pub(crate) fn resume_tokens(config: &PipelineConfig) -> Result<ResumeTokens, GatewayError> {
    let ttl_ms = config.resume.ttl_seconds * 1000;
    if let Some(name) = &config.resume.key_env {
        let key = std::env::var(name).map_err(|_| {
            GatewayError::Config(format!("resume.key_env names {name}, which is not set"))
        })?;
        if key.len() < 32 {
            return Err(GatewayError::Config(format!(
                "{name} must hold at least 32 characters"
            )));
        }
        return Ok(ResumeTokens::new(key.as_bytes(), ttl_ms));
    }
    Ok(match &config.resume.key {
        Some(key) => ResumeTokens::new(key.as_bytes(), ttl_ms),
        None => ResumeTokens::ephemeral(ttl_ms),
    })
}

/// The legacy product databases a config names, by product: server URLs as written,
/// SQLite ones with their path made absolute.
pub fn legacy_urls(config: &PipelineConfig) -> Result<Vec<(String, String)>, StoreError> {
    config
        .state
        .iter()
        .flat_map(|s| s.legacy.iter())
        .map(|(product, url)| {
            let url = if url.starts_with("sqlite://") {
                let path = sqlite_path(url, &config.base_dir)?;
                let absolute = std::path::absolute(&path)
                    .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
                format!("sqlite://{}", absolute.display())
            } else {
                url.clone()
            };
            Ok((product.clone(), url))
        })
        .collect()
}

/// The directory database path a config names.
pub fn directory_path(config: &PipelineConfig) -> Result<Option<std::path::PathBuf>, StoreError> {
    config
        .state
        .as_ref()
        .map(|s| sqlite_path(&s.directory, &config.base_dir))
        .transpose()
}
