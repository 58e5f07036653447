//! The one model of proof: what someone has shown the host about one user, kept
//! server-side behind an opaque token the host issued, and what each endpoint and
//! flow needs before it acts. [`Gateway::authorize`] is the one place that checks it.
//!
//! Why one model: each flow deciding on its own who had proven what is how an
//! attacker holding only a victim's password once planted their phone on the account
//! (a user id was taken as proof at enrolment) and how a credential stuffer got the
//! enrolment support had opened for the owner ("the next login" was taken as the
//! person support verified). Here a user id, an email or "the next login" is never
//! proof: only what the host itself checked counts, recorded when it checked it.
//!
//! | need | what satisfies it |
//! |---|---|
//! | [`Need::Enrol`] | a recovery's own proof for that recovery while it waits for a new factor (a burnt recovery code, a wait the host's clock saw served, or support's link to the person two agents verified); otherwise a full sign-in: a vouching caller naming the user, or the host's token for a login that showed the password and, when the user has an active factor, that factor |
//! | [`Need::RecoveryCodes`] | a vouching caller naming the user, or the password and the factor (never the password alone, never a recovery's proof) |
//!
//! Endpoints with operator credentials (the support console, reload, the import API)
//! and the owner's cancel link keep their own tokens; `tests/host/proof.rs` walks
//! every endpoint with every lesser proof.

use super::Gateway;
use crate::model::{FactorKind, FactorStatus, RecoveryPath, RecoveryStage};
use crate::state::StoreError;
use crate::state::proofs::{self, ProofRow};
use crate::state::recovery as recovery_store;

/// The prefix of every proof token the host issues (the resume token's is `r1.`).
const PREFIX: &str = "pp1_";
/// The longest token worth hashing: the prefix and 43 base64 characters.
const MAX_TOKEN_LEN: usize = 64;

/// Something the host saw shown, about one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shown {
    /// This login's password, checked by the host.
    Password,
    /// The user's active second factor: a code the host checked with its provider.
    Factor,
    /// A caller configured to vouch said it signed the user in (its own password and
    /// factor checks); such a caller names the user itself.
    Vouched,
    /// A recovery code, burnt by the host.
    RecoveryCode,
    /// A recovery's waiting period, over by the host's clock.
    WaitServed,
    /// Two support agents verified the person; the link went to the channel they
    /// verified.
    SupportVerified,
}

impl Shown {
    pub fn name(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Factor => "factor",
            Self::Vouched => "vouched",
            Self::RecoveryCode => "recovery-code",
            Self::WaitServed => "wait-served",
            Self::SupportVerified => "support-verified",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            Self::Password,
            Self::Factor,
            Self::Vouched,
            Self::RecoveryCode,
            Self::WaitServed,
            Self::SupportVerified,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// The proof a recovery's path stands on.
    pub fn of_recovery_path(path: RecoveryPath) -> Self {
        match path {
            RecoveryPath::Code => Self::RecoveryCode,
            RecoveryPath::Wait => Self::WaitServed,
            RecoveryPath::Assisted => Self::SupportVerified,
        }
    }
}

/// What an endpoint or flow needs before it acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Start or confirm an SMS enrolment.
    Enrol,
    /// Issue new recovery codes.
    RecoveryCodes,
}

/// What a request presents, besides its caller's own credentials.
#[derive(Debug, Clone, Copy)]
pub enum Presented<'a> {
    /// Nothing: a user id in a body is not proof.
    Nothing,
    /// A caller that vouches names the user it signed in.
    Vouched { caller: &'a str, user_id: &'a str },
    /// A proof token the host issued.
    Token(&'a str),
}

/// What was proven, for the flow to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub user_id: String,
    /// Names the proof in what it starts (an enrolment): the proof's id, or
    /// `vouched:<caller>`.
    pub proof_id: String,
    pub shown: Vec<Shown>,
    /// The recovery this proof stands for: its enrolment completes that recovery.
    pub recovery_id: Option<String>,
    /// Spent by the flow that completes with it (support's link).
    pub single_use: bool,
}

impl Grant {
    pub fn has(&self, shown: Shown) -> bool {
        self.shown.contains(&shown)
    }
}

/// Not proven: one answer, whatever the account or the token (unknown, expired,
/// spent, another user's, too little), so a refusal says nothing about the account.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("this needs proof of who is asking: a token the host issued for it")]
    NotProven,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new token and what the store keeps of it.
pub(crate) struct Issued {
    pub token: String,
    pub digest: String,
    pub row: ProofRow,
}

/// A fresh token for `row`'s fields (its id is made here).
pub(crate) fn new_proof(
    user_id: &str,
    shown: &[Shown],
    recovery_id: Option<&str>,
    now_ms: u64,
    ttl_ms: u64,
    single_use: bool,
) -> Issued {
    let mut secret = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut secret);
    use base64::Engine as _;
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let mut names: Vec<&str> = shown.iter().map(|s| s.name()).collect();
    names.sort_unstable();
    Issued {
        digest: crate::state::token_digest(&token),
        row: ProofRow {
            id: format!("prf_{}", crate::model::random_id()),
            user_id: user_id.to_owned(),
            shown: names.join(","),
            recovery_id: recovery_id.map(str::to_owned),
            issued_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
            single_use,
            used_at_ms: None,
        },
        token,
    }
}

impl Gateway {
    /// Issues a proof token for what this login showed; returns the token and the
    /// proof's id.
    pub(crate) fn issue_proof(
        &self,
        user_id: &str,
        shown: &[Shown],
        recovery_id: Option<&str>,
    ) -> Result<(String, String), StoreError> {
        let issued = new_proof(
            user_id,
            shown,
            recovery_id,
            self.clock.now_ms(),
            self.tokens.ttl_ms,
            false,
        );
        proofs::insert(self.state.sql(), &issued.digest, &issued.row)?;
        Ok((issued.token, issued.row.id))
    }

    /// The one check: what `presented` proves, if it is enough for `need`.
    pub fn authorize(&self, presented: Presented<'_>, need: Need) -> Result<Grant, ProofError> {
        let now_ms = self.clock.now_ms();
        let grant = match presented {
            Presented::Nothing => return Err(ProofError::NotProven),
            Presented::Vouched { caller, user_id } => Grant {
                user_id: user_id.to_owned(),
                proof_id: format!("vouched:{caller}"),
                shown: vec![Shown::Vouched],
                recovery_id: None,
                single_use: false,
            },
            Presented::Token(token) => {
                if !token.starts_with(PREFIX) || token.len() > MAX_TOKEN_LEN {
                    return Err(ProofError::NotProven);
                }
                let Some(row) =
                    proofs::by_digest(self.state.sql(), &crate::state::token_digest(token))?
                else {
                    return Err(ProofError::NotProven);
                };
                if row.expires_at_ms <= now_ms || (row.single_use && row.used_at_ms.is_some()) {
                    return Err(ProofError::NotProven);
                }
                Grant {
                    user_id: row.user_id,
                    proof_id: row.id,
                    shown: row.shown.split(',').filter_map(Shown::parse).collect(),
                    recovery_id: row.recovery_id,
                    single_use: row.single_use,
                }
            }
        };
        let enough = match (need, &grant.recovery_id) {
            (Need::Enrol, Some(recovery_id)) => {
                self.recovery_proven(&grant, recovery_id, now_ms)?
            }
            (Need::Enrol, None) => self.signed_in_fully(&grant)?,
            // Codes outlive the factor they stand in for: they are minted only by
            // someone who showed a factor (or a caller that vouches), never by the
            // password alone, which would let whoever holds it recover the account
            // after its owner enrols.
            (Need::RecoveryCodes, None) => {
                grant.has(Shown::Vouched)
                    || (grant.has(Shown::Password) && grant.has(Shown::Factor))
            }
            (Need::RecoveryCodes, Some(_)) => false,
        };
        if enough {
            Ok(grant)
        } else {
            Err(ProofError::NotProven)
        }
    }

    /// A recovery's proof counts for that recovery only, while it is open and waits
    /// for a new factor, and only the proof its path stands on.
    fn recovery_proven(
        &self,
        grant: &Grant,
        recovery_id: &str,
        now_ms: u64,
    ) -> Result<bool, ProofError> {
        let open = recovery_store::open_recovery(self.state.sql(), &grant.user_id, now_ms)?;
        Ok(open.is_some_and(|open| {
            open.id == recovery_id
                && open.status == RecoveryStage::Enrolling
                && grant.has(Shown::of_recovery_path(open.path))
        }))
    }

    /// Vouched, or the password and, where the user has an active factor, that factor.
    fn signed_in_fully(&self, grant: &Grant) -> Result<bool, ProofError> {
        if grant.has(Shown::Vouched) {
            return Ok(true);
        }
        if !grant.has(Shown::Password) {
            return Ok(false);
        }
        if grant.has(Shown::Factor) {
            return Ok(true);
        }
        let has_factor = self
            .state
            .factors_of(&grant.user_id)?
            .iter()
            .any(|f| f.kind == FactorKind::Sms && f.status == FactorStatus::Active);
        Ok(!has_factor)
    }
}
