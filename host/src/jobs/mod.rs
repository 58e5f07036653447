//! Work that runs beside logins, not inside them: outbox delivery, re-sealing phone
//! numbers under a new key, and seeding the demo stores.

pub mod backfill;
pub mod import;
pub mod keys;
pub mod outbox;
pub mod seed;
