//! With the `externalscaler` feature: compiles `proto/externalscaler.proto` with the pure-Rust
//! `protox` compiler (no system `protoc`), generates the tonic server and client, and writes
//! the file descriptor set that the scaler's gRPC reflection service serves. Without the
//! feature it does nothing, so the crates that only need the CRD types build no gRPC code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    // Cargo compiles the build script with the package's features, so this is the same test
    // as `CARGO_FEATURE_EXTERNALSCALER`, and the optional build dependencies exist exactly then.
    #[cfg(feature = "externalscaler")]
    externalscaler::generate()?;
    Ok(())
}

#[cfg(feature = "externalscaler")]
mod externalscaler {
    use std::path::PathBuf;

    pub(crate) fn generate() -> Result<(), Box<dyn std::error::Error>> {
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
}
