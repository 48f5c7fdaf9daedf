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
    // Messages and clients...
    tonic_prost_build::configure()
        // Body chunks as `Bytes`: handed through without copies.
        .bytes(".")
        // Smaller first buffers per call than tonic's 8 KiB (src/codec.rs).
        .codec_path("crate::codec::BrokerCodec")
        .build_server(false)
        .file_descriptor_set_path(out_dir.join("broker_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    // ...and servers, over the same messages except the answer to Query,
    // which the broker writes straight from PostgreSQL's cells
    // (src/grpc/rows.rs; the same bytes on the wire).
    let servers = out_dir.join("servers");
    std::fs::create_dir_all(&servers)?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::BrokerCodec")
        .build_client(false)
        .extern_path(".broker.v1", "crate::proto")
        .extern_path(
            ".broker.v1.QueryResponse",
            "crate::grpc::rows::QueryResponse",
        )
        .out_dir(&servers)
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    order_functions()?;
    Ok(())
}

/// Lays the broker's code out in the order of `build/function-order.txt`
/// (written by `scripts/order-functions.sh`): what an idle broker runs
/// first, then what its calls run, so that the pages they take are few
/// (the kernel maps code in 64 KiB windows around each page touched).
/// Optimised builds for x86_64 Linux only, where rustc links with its own
/// lld unless told otherwise (a linker chosen in Cargo's configuration or
/// in RUSTFLAGS turns the order off: GNU ld has no such option); the names
/// hold a hash of the build settings, so the file matches `--profile dist`,
/// and lld ignores the names it does not find.
fn order_functions() -> Result<(), Box<dyn std::error::Error>> {
    let order = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("build/function-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    let lld_target = env::var("CARGO_CFG_TARGET_ARCH")? == "x86_64"
        && env::var("CARGO_CFG_TARGET_OS")? == "linux"
        && env::var("CARGO_CFG_TARGET_ENV")? == "gnu";
    let own_linker = env::var_os("RUSTC_LINKER").is_some()
        || env::var("CARGO_ENCODED_RUSTFLAGS")
            .is_ok_and(|flags| flags.contains("linker") || flags.contains("link-self-contained"));
    if env::var("PROFILE")? == "release" && lld_target && !own_linker && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=broker=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=broker=-Wl,--no-warn-symbol-ordering");
    }
    Ok(())
}
