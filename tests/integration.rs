//! The integration tests, one module per file in tests/, built as ONE test binary.
//!
//! Each file used to be its own binary, so each linked the whole service and compiled
//! `common` again: one binary builds several times faster. Run one file's tests with
//! `cargo test --test integration <file>::` (for example `faults::`).

mod common;

mod accepted_problems;
mod ambiguous;
mod anthropic_contract;
mod anthropic_emulator;
mod auth;
mod cli;
mod cluster;
mod config;
mod cost;
mod crash;
mod dataset_codes;
mod differential;
mod emulator_api;
mod faults;
mod grpc_api;
mod history;
mod hostile;
mod leases;
mod lifecycle;
mod limits;
mod metrics;
mod openai_adapter;
mod openai_chat;
mod openai_contract;
mod races;
mod reference_datasets;
mod restart;
mod runbook;
mod secret_corpus;
mod secrets;
mod serve;
mod serving;
mod stale_upload;
mod store;
mod training;
mod wording;
