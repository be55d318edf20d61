//! KEDA's `externalscaler` gRPC contract, generated from `proto/externalscaler.proto` when the
//! `externalscaler` feature is on.
//!
//! Both sides are generated: the server trait the scaler implements
//! (`external_scaler_server::ExternalScaler`) and the client that KEDA, the end-to-end KEDA
//! stand-in or a test uses (`external_scaler_client::ExternalScalerClient`).

#![allow(missing_docs, unreachable_pub, clippy::all)]

tonic::include_proto!("externalscaler");

/// The encoded file descriptor set of `externalscaler.proto`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/externalscaler_descriptor.bin"));
