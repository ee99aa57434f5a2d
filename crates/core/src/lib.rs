//! FineTune's domain, below every adapter: the dataset validator and the one domain
//! error. It knows nothing of gRPC, HTTP or databases (no tonic, prost, reqwest, sqlx or
//! axum in its dependency tree), so nothing here can reach up to them.

#![forbid(unsafe_code)]

pub mod dataset;
pub mod error;

pub use error::Error;
