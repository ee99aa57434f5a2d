//! Persistence ports: content-addressed dataset files (the job store follows).

mod blobs;

pub use blobs::{DatasetStore, Expected, StoredDataset};
