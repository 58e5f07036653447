//! Integration tests of the host, against real guest components built from
//! rules/testing/ (`cargo xtask test` builds them first).

mod common;

mod backfill;
mod cache;
mod cli;
mod config;
mod connections;
mod contract;
mod docs;
mod factor_limits;
mod factor_transfer;
mod faults;
mod hardening;
mod import;
mod import_jobs;
mod legacy;
mod load;
mod memory;
mod mfa;
mod migration;
mod outbox;
mod postgres;
mod proof;
mod recovery;
mod replay;
mod schema;
mod semantics;
mod server;
mod warm;
mod wire;
