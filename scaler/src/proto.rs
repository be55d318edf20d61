//! KEDA's `externalscaler` gRPC contract: the generated server trait this crate implements
//! and the client KEDA uses, re-exported from [`keda_http_api::externalscaler`] (which
//! generates it from `api/proto/externalscaler.proto`), e.g.
//! `keda_http_scaler::proto::external_scaler_client::ExternalScalerClient`.

pub use keda_http_api::externalscaler::*;
