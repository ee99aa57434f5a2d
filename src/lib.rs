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

pub use finetune_core::ports::telemetry;
pub use finetune_core::{Error, dataset, error, jobs, serving};

/// The provider ports of the core and their adapters, under the path they had before the
/// workspace (tests, benchmarks and the SDK harness use it).
pub mod upstream {
    pub use finetune_core::ports::*;
    pub use finetune_providers::{OpenAiConfig, anthropic, openai, parse_retry_after, types};
}

/// The store port and its SQLite adapter, under the path they had before the workspace.
pub mod store {
    pub use finetune_core::store::*;
    pub use finetune_store_sqlite::SqliteStore;
}
