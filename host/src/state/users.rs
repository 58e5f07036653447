//! Directory users outside the login path: seeding writes them whole, counts them, and
//! clears the directory. Once for both backends, over portable SQL.

use super::portable::{SqlStore, Val, transact};
use super::{StoreError, sql_time};
use crate::model::{DirectoryUser, normalize_email};

/// Inserts or replaces a user and their identities (seeding, tests).
pub fn put(
    store: &dyn SqlStore,
    user: &DirectoryUser,
    password_hash: Option<&str>,
) -> Result<(), StoreError> {
    let email = user.email.clone().unwrap_or_default();
    transact(store, |tx| {
        tx.execute(
            "INSERT INTO users (id, email, email_norm, email_verified, app_metadata, user_metadata, password_hash,
                                created_at_ms, last_login_ms, logins_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO UPDATE SET email = excluded.email, email_norm = excluded.email_norm,
                 email_verified = excluded.email_verified, app_metadata = excluded.app_metadata,
                 user_metadata = excluded.user_metadata, password_hash = excluded.password_hash,
                 created_at_ms = excluded.created_at_ms, last_login_ms = excluded.last_login_ms,
                 logins_count = excluded.logins_count",
            &[
                Val::text(&user.id),
                Val::text(&email),
                Val::text(normalize_email(&email)),
                Val::Bool(Some(user.email_verified)),
                Val::text(user.app_metadata.to_string()),
                Val::text(user.user_metadata.to_string()),
                Val::Text(password_hash.map(str::to_owned)),
                Val::int(sql_time(user.created_at_ms)),
                Val::Int(user.last_login_ms.map(sql_time)),
                Val::int(i64::from(user.logins_count)),
            ],
        )?;
        for identity in &user.identities {
            tx.execute(
                "INSERT INTO identities (provider, provider_user_id, user_id, connection) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (provider, provider_user_id) DO UPDATE SET user_id = excluded.user_id",
                &[
                    Val::text(&identity.provider),
                    Val::text(&identity.user_id),
                    Val::text(&user.id),
                    Val::text(&identity.connection),
                ],
            )?;
        }
        Ok(())
    })
}

pub fn count(store: &dyn SqlStore) -> Result<u64, StoreError> {
    super::portable::count(store, "SELECT COUNT(*) FROM users", &[])
}

/// Directory users whose email is outside `domains` (constants: the ones seeding
/// writes): users seeding did not make, which `clear` would delete.
pub fn count_outside(store: &dyn SqlStore, domains: &[&str]) -> Result<u64, StoreError> {
    let outside = domains
        .iter()
        .map(|d| format!("email_norm LIKE '%@{d}'"))
        .collect::<Vec<_>>()
        .join(" OR ");
    super::portable::count(
        store,
        &format!("SELECT COUNT(*) FROM users WHERE NOT ({outside})"),
        &[],
    )
}

/// Every table of the directory that seeding empties: all but `schema_migrations` and
/// `import_files` (an operator's progress through export files, not demo data),
/// children before the rows they reference. Recovery, support and proof state belongs
/// to the users too: left behind, a second seeding found the last run's recoveries open.
pub const CLEARED: &[&str] = &[
    "identities",
    "factors",
    "users",
    "outbox",
    "resume_tokens",
    "applied_transactions",
    "mfa_exports",
    "mfa_backfill",
    "mfa_audit",
    "recoveries",
    "recovery_codes",
    "recovery_throttle",
    "session_revocations",
    "login_sightings",
    "support_requests",
    "proofs",
    "enrolments",
    "device_tokens",
    "factor_failures",
    "rate_windows",
    "import_jobs",
    "import_job_errors",
    "open_codes",
    "password_resets_required",
    "audit_log",
];

/// Deletes every row of every [`CLEARED`] table (seeding only).
pub fn clear(store: &dyn SqlStore) -> Result<(), StoreError> {
    transact(store, |tx| {
        for table in CLEARED {
            tx.execute(&format!("DELETE FROM {table}"), &[])?;
        }
        Ok(())
    })
}

/// One directory user as `import export --from-directory` reads them. The password
/// hash and the factors' sealed phones are secrets: `Debug` leaves them out.
pub struct ExportedUser {
    pub user: DirectoryUser,
    pub password_hash: Option<String>,
    pub factors: Vec<super::factors::Factor>,
}

impl std::fmt::Debug for ExportedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportedUser")
            .field("id", &self.user.id)
            .field("has_password_hash", &self.password_hash.is_some())
            .field("factors", &self.factors.len())
            .finish_non_exhaustive()
    }
}

/// The next `limit` directory users after id `after`, in id order (keyset pages:
/// memory stays flat and a user added meanwhile is read once or not at all), each with
/// the hash, links and factors the export needs.
pub fn export_page(
    store: &dyn SqlStore,
    after: &str,
    limit: usize,
) -> Result<Vec<ExportedUser>, StoreError> {
    let rows = super::portable::read(store, |tx| {
        tx.query(
            "SELECT id, password_hash FROM users WHERE id > $1 ORDER BY id LIMIT $2",
            &[
                Val::text(after),
                Val::int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
    })?;
    let mut page = Vec::with_capacity(rows.len());
    for row in rows {
        let mut row = row.into_iter();
        let id = row.next().and_then(Val::into_text).unwrap_or_default();
        let password_hash = row.next().and_then(Val::into_text);
        // One user at a time, as the login path reads them: a user deleted since the
        // page was read is simply not exported.
        let Some(user) = super::login_path::users_where(store, "id = $1", &id)?
            .into_iter()
            .next()
        else {
            continue;
        };
        page.push(ExportedUser {
            factors: super::factors::rows::of_user(store, &id)?,
            user,
            password_hash,
        });
    }
    Ok(page)
}
