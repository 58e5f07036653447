//! Integration tests of the host, against real guest components built from
//! rules/testing/ (`cargo xtask test` builds them first).

// A scenario (an attack walked step by step, a job killed and resumed) reads top to
// bottom as one story; the workspace's function-length lint is for the code it tests.
#![allow(clippy::too_many_lines)]

mod common;

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
mod phone_export;
mod postgres;
mod proof;
mod recovery;
mod replay;
mod schema;
mod semantics;
mod server;
mod warm;
mod wire;
