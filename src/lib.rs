//! FineTune service: validate fine-tuning datasets, train and watch jobs, and serve
//! completions over gRPC (`fileengine.finetune.v1.FineTuneService`).
//!
//! Data flows one way: `service` (gRPC handlers) -> core (`dataset`) -> ports (`store`).

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod dataset;
pub mod error;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod pb;
pub mod server;
pub mod service;
pub mod serving;
pub mod store;
pub mod upstream;

pub use error::Error;
