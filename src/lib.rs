//! FineTune service: validate fine-tuning datasets, train and watch jobs, and serve
//! completions over gRPC (`fileengine.finetune.v1.FineTuneService`).
//!
//! This package is the binary's top: the CLI, and the server that wires the gRPC API
//! (`service`) to the core (`finetune-core`: datasets, jobs, serving and their ports) and
//! to the adapters (`finetune-providers`, `finetune-store-sqlite`). Imports run one way:
//! server -> adapters -> core.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod pb;
pub mod server;
pub mod service;
