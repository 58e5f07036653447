//! `portcullis:rule@0.1.0`'s imports, served by the current implementations. The
//! records are the same shapes in both versions but distinct Rust types, so each
//! crosses by a move, field by field; nothing is copied.

use crate::runtime::bindings::v0_1::portcullis::rule as v0_1;
use crate::runtime::bindings::v0_2::portcullis::rule as current;
use crate::runtime::bindings::wit;
use crate::runtime::sandbox::RuleState;

type Answer<T> = wasmtime::Result<Result<T, v0_1::types::CapabilityError>>;

fn error(e: wit::CapabilityError) -> v0_1::types::CapabilityError {
    use v0_1::types::CapabilityErrorKind as Old;
    v0_1::types::CapabilityError {
        kind: match e.kind {
            wit::CapabilityErrorKind::Unavailable => Old::Unavailable,
            wit::CapabilityErrorKind::InvalidArgument => Old::InvalidArgument,
            wit::CapabilityErrorKind::NotFound => Old::NotFound,
        },
        message: e.message,
    }
}

fn user(u: wit::User) -> v0_1::types::User {
    v0_1::types::User {
        id: u.id,
        email: u.email,
        email_verified: u.email_verified,
        identities: u
            .identities
            .into_iter()
            .map(|i| v0_1::types::Identity {
                provider: i.provider,
                user_id: i.user_id,
                connection: i.connection,
            })
            .collect(),
        app_metadata: u.app_metadata,
        user_metadata: u.user_metadata,
        created_at_ms: u.created_at_ms,
        last_login_ms: u.last_login_ms,
        logins_count: u.logins_count,
    }
}

impl v0_1::types::Host for RuleState {}

impl v0_1::log::Host for RuleState {
    fn log(&mut self, level: v0_1::log::Level, message: String) -> wasmtime::Result<()> {
        use current::log::Level;
        let level = match level {
            v0_1::log::Level::Debug => Level::Debug,
            v0_1::log::Level::Info => Level::Info,
            v0_1::log::Level::Warn => Level::Warn,
            v0_1::log::Level::Error => Level::Error,
        };
        current::log::Host::log(self, level, message)
    }
}

impl v0_1::config::Host for RuleState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        current::config::Host::get(self, key)
    }
}

impl v0_1::directory::Host for RuleState {
    fn find_by_email(&mut self, email: String) -> Answer<Vec<v0_1::types::User>> {
        Ok(current::directory::Host::find_by_email(self, email)?
            .map(|users| users.into_iter().map(user).collect())
            .map_err(error))
    }

    fn get_user(&mut self, id: String) -> Answer<Option<v0_1::types::User>> {
        Ok(current::directory::Host::get_user(self, id)?
            .map(|found| found.map(user))
            .map_err(error))
    }

    fn verify_password(&mut self, user_id: String) -> Answer<bool> {
        Ok(current::directory::Host::verify_password(self, user_id)?.map_err(error))
    }
}

impl v0_1::legacy::Host for RuleState {
    fn find_accounts(&mut self, email: String) -> Answer<Vec<v0_1::types::LegacyAccount>> {
        Ok(current::legacy::Host::find_accounts(self, email)?
            .map(|accounts| {
                accounts
                    .into_iter()
                    .map(|a| v0_1::types::LegacyAccount {
                        product: a.product,
                        legacy_id: a.legacy_id,
                        email: a.email,
                        email_verified: a.email_verified,
                        created_at_ms: a.created_at_ms,
                        profile: a.profile,
                    })
                    .collect()
            })
            .map_err(error))
    }

    fn verify_password(&mut self, product: String, legacy_id: String) -> Answer<bool> {
        Ok(current::legacy::Host::verify_password(self, product, legacy_id)?.map_err(error))
    }
}
