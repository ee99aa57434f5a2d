//! Generated protobuf and gRPC code for `fileengine.finetune.v1`.

#![allow(
    unreachable_pub,
    clippy::all,
    reason = "generated code is not held to the crate's lints"
)]

tonic::include_proto!("fileengine.finetune.v1");

/// Descriptor set of every proto file, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("finetune_descriptor");

/// `google/rpc/status.proto` and `google/rpc/error_details.proto` (ErrorInfo, BadRequest,
/// RetryInfo, ...), for reflection: the error details of every status are these messages, and
/// a generic client (grpcurl) decodes them only if the server describes them. tonic-types
/// compiled them under bare names (`status.proto`); they get the paths every other toolchain
/// imports them by.
pub fn google_rpc_descriptor_set() -> Result<prost_types::FileDescriptorSet, prost::DecodeError> {
    use prost::Message as _;
    let mut set = prost_types::FileDescriptorSet::decode(tonic_types::pb::FILE_DESCRIPTOR_SET)?;
    for file in &mut set.file {
        if file.package() == "google.rpc" {
            if let Some(name) = file.name.as_mut().filter(|n| !n.contains('/')) {
                *name = format!("google/rpc/{name}");
            }
        }
    }
    Ok(set)
}
