//! The second factor's data at rest: phone numbers validated and normalized, and
//! sealed with AES-256-GCM before they are stored. (The factors table, the providers
//! and the routing rule build on these.)

pub mod phone;
pub mod recovery_codes;
pub mod sealed;
