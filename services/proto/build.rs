//! Compiles `proto/presence/v1/*.proto` with the protoc shipped by `protoc-bin-vendored`,
//! so no system protoc is needed. Also writes the descriptor set that non-Rust
//! consumers of the topics decode with.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files: Vec<PathBuf> = ["scan", "decision", "device", "inventory", "rpc", "audit"]
        .iter()
        .map(|name| root.join(format!("presence/v1/{name}.proto")))
        .collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    prost_build::Config::new()
        .protoc_executable(protoc)
        .file_descriptor_set_path(out_dir.join("presence_v1_descriptor.bin"))
        .compile_protos(&files, &[root])?;
    Ok(())
}
