//! The bulk import beside lazy migration: export the legacy users the directory does
//! not have yet into Auth0's user-import files, check and store such files' users
//! (the import API), and submit the files to an import API and follow the jobs.

pub mod export;
pub mod records;
pub mod run;
