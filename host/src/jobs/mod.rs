//! Work that runs beside logins, not inside them: outbox delivery and seeding the
//! demo stores.

pub mod outbox;
pub mod seed;
