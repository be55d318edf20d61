//! Compiles `proto/externalscaler.proto` with the pure-Rust `protox` compiler (no system
//! `protoc`), generates the tonic server and client, and writes the file descriptor set that
//! the gRPC reflection service serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/externalscaler.proto");
    let fds = protox::compile(["proto/externalscaler.proto"], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor = prost::Message::encode_to_vec(&fds);
    std::fs::write(out_dir.join("externalscaler_descriptor.bin"), descriptor)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
