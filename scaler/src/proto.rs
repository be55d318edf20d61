//! KEDA's `externalscaler` gRPC contract, generated from `proto/externalscaler.proto`.
//!
//! Both sides are generated: the server trait this crate implements and the client that KEDA
//! (or the local KEDA stand-in, or a test) uses, e.g.
//! `keda_http_scaler::proto::external_scaler_client::ExternalScalerClient`.

#![allow(missing_docs, unreachable_pub, clippy::all)]

tonic::include_proto!("externalscaler");

/// The encoded file descriptor set of `externalscaler.proto`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/externalscaler_descriptor.bin"));
