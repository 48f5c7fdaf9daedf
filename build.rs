//! Compiles `proto/broker/v1/*.proto` into `OUT_DIR`, with a file descriptor
//! set for server reflection. protoc is vendored: no system install needed.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "proto/broker/v1/object_store.proto",
        "proto/broker/v1/database.proto",
    ];
    tonic_prost_build::configure()
        // Body chunks as `Bytes`: handed through without copies.
        .bytes(".")
        // Smaller first buffers per call than tonic's 8 KiB (src/codec.rs).
        .codec_path("crate::codec::BrokerCodec")
        .file_descriptor_set_path(out_dir.join("broker_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
