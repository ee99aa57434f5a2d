//! FineTune's domain, below every adapter: the dataset validator, the training lifecycle
//! (jobs), serving with tiers and A/B splits, the ports they need (providers, store,
//! telemetry) and the one domain error. It knows nothing of gRPC, HTTP or databases (no tonic, prost, reqwest, sqlx or
//! axum in its dependency tree), so nothing here can reach up to them.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod dataset;
pub mod domain;
pub mod error;
pub mod jobs;
pub mod ports;
pub mod serving;
pub mod store;

pub use error::Error;
