//! Compiles `proto/presence/v1/*.proto` with the protoc shipped by `protoc-bin-vendored`,
//! so no system protoc is needed. Also writes the descriptor set that non-Rust
//! consumers of the topics decode with.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const NAMES: [&str; 6] = ["scan", "decision", "device", "inventory", "rpc", "audit"];
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files: Vec<PathBuf> = NAMES
        .iter()
        .map(|name| root.join(format!("presence/v1/{name}.proto")))
        .collect();
    // Relative to this package, not absolute: Cargo keeps a build script's
    // result for the package whatever directory the workspace is in, so an
    // absolute path would keep watching the files of the checkout that ran it
    // first (a build cache shared by clones in other directories then compiled
    // stale generated code against changed .proto files).
    for name in NAMES {
        println!("cargo:rerun-if-changed=../../proto/presence/v1/{name}.proto");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    prost_build::Config::new()
        .protoc_executable(protoc)
        .file_descriptor_set_path(out_dir.join("presence_v1_descriptor.bin"))
        .compile_protos(&files, &[root])?;
    Ok(())
}
