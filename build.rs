//! Compiles proto/ into Rust and writes the descriptor set served by reflection.
//! Hermetic: uses the vendored protoc unless PROTOC is set.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        "proto/fileengine/finetune/v1/service.proto",
        "proto/fileengine/finetune/v1/dataset.proto",
        "proto/fileengine/finetune/v1/job.proto",
        "proto/fileengine/finetune/v1/completion.proto",
    ];
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("finetune_descriptor.bin"))
        .compile_with_config(config, &files, &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    Ok(())
}
