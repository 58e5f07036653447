//! The bulk import beside lazy migration: export the legacy users the directory does
//! not have yet into Auth0's user-import files.

pub mod export;
