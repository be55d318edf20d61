//! The HTTP client OTLP/HTTP exports go through: hyper-util's pooled client (plain HTTP;
//! collectors are reached inside the cluster), bounded by the export timeout, run on the tokio
//! runtime that built it so a caller on any thread can await it.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::HttpError;

/// Largest collector response read back.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A hyper-util client for OTLP/HTTP exports.
#[derive(Debug, Clone)]
pub(crate) struct ExportClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
}

impl ExportClient {
    /// A client on the current tokio runtime; `None` outside one.
    pub(crate) fn new(timeout: Duration) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        Some(Self {
            client,
            timeout,
            runtime,
        })
    }

    /// Sends `request` and reads the response, within the timeout.
    pub(crate) async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, exchange).await });
        match task.await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(format!("no answer within {timeout:?}").into()),
            Err(error) => Err(Box::new(error)),
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        self.send(request).await
    }
}
