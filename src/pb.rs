//! Generated protobuf and gRPC code for `fileengine.finetune.v1`.

#![allow(
    unreachable_pub,
    clippy::all,
    reason = "generated code is not held to the crate's lints"
)]

tonic::include_proto!("fileengine.finetune.v1");

/// Descriptor set of every proto file, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("finetune_descriptor");
