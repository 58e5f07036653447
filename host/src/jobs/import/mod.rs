//! The bulk import beside lazy migration: export the legacy users the directory does
//! not have yet into Auth0's user-import files, check and store such files' users
//! (the import API, whose jobs `worker` runs from the shared state), submit the files to an import API and follow the jobs, and write
//! the unified ids back into the products.

pub mod backfill_ids;
pub mod custom_hash;
pub mod directory_export;
pub mod export;
pub mod records;
pub mod run;
pub mod verify;
pub mod worker;
