//! Suite 4: activation. First request at an idle route until `StreamIsActive` says true, with
//! an in-process scaler following the interceptor's `/queue/watch`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keda_http_benches::report::{self, Section, Table};
use keda_http_benches::routes;
use keda_http_benches::stats::Samples;
use serde_json::json;

use super::{GOAL_ACTIVATION_US, HOST, Ours, ROUTE, Settings};

pub(crate) fn activation(settings: &Settings, ours: &Ours) -> anyhow::Result<Section> {
    use keda_http_scaler::proto::ScaledObjectRef;
    use keda_http_scaler::proto::external_scaler_client::ExternalScalerClient;
    use keda_http_scaler::targets::{RouteScaling, StaticTargets};
    use keda_http_scaler::{Scaler, Settings as ScalerSettings, discovery, metrics::Metrics};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let admin = ours.admin;
    let proxy = ours.proxy;
    let n = settings.activations;
    rt.block_on(async move {
        let targets = Arc::new(StaticTargets::new());
        targets.set_route(
            routes::NAMESPACE,
            ROUTE,
            RouteScaling {
                concurrency: Some(100.0),
                rate: None,
            },
        );
        let (_discovery_tx, discovery_rx) = discovery::fixed([admin]);
        let mut registry = prometheus_client::registry::Registry::default();
        let scaler = Scaler::new(
            ScalerSettings::default(),
            discovery_rx,
            targets,
            Metrics::register(&mut registry),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(scaler.serve(listener, async move {
            let _ = stop_rx.await;
        }));
        let result = async {
            let mut client = ExternalScalerClient::connect(format!("http://{grpc}")).await?;
            let sor = ScaledObjectRef {
                name: ROUTE.into(),
                namespace: routes::NAMESPACE.into(),
                scaler_metadata: [("interceptorRoute".to_owned(), ROUTE.to_owned())]
                    .into_iter()
                    .collect(),
            };
            let mut stream = client.stream_is_active(sor).await?.into_inner();
            let mut samples = Samples::new();
            let http =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Empty<bytes::Bytes>>();
            for _ in 0..n {
                // Wait until the stream reports idle.
                loop {
                    let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
                        .await
                        .context("StreamIsActive went silent")??
                        .context("StreamIsActive ended")?;
                    if !msg.result {
                        break;
                    }
                }
                let t0 = Instant::now();
                let request = http::Request::get(format!("http://{proxy}/?delay_ms=50"))
                    .header(http::header::HOST, HOST)
                    .body(http_body_util::Empty::new())?;
                let call = tokio::spawn(http.request(request));
                loop {
                    let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
                        .await
                        .context("no activation within 10 s")??
                        .context("StreamIsActive ended")?;
                    if msg.result {
                        samples.push(t0.elapsed().as_micros() as u64);
                        break;
                    }
                }
                let _ = call.await;
            }
            anyhow::Ok(samples)
        }
        .await;
        let _ = stop_tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        let mut samples = result?;
        let summary = samples.summary().context("no activation sample")?;
        let mut section = Section::new("Activation latency");
        section.table = Table::new(&["samples", "p50", "p90", "p99", "max"]);
        section.table.row(vec![
            summary.count.to_string(),
            report::latency(Some(summary.p50_us as f64)),
            report::latency(Some(summary.p90_us as f64)),
            report::latency(Some(summary.p99_us as f64)),
            report::latency(Some(summary.max_us as f64)),
        ]);
        section.notes.push(
            "first request at an idle route (our interceptor, release binary) → an in-process \
             keda-http-scaler (default settings, push over /queue/watch) sends `true` on an open \
             StreamIsActive"
                .to_owned(),
        );
        section.notes.push(format!(
            "goal ≤ {:.0} ms (p50): {}; p99 against the same bound: {}",
            GOAL_ACTIVATION_US / 1000.0,
            report::verdict(Some(summary.p50_us as f64), GOAL_ACTIVATION_US, true),
            report::verdict(Some(summary.p99_us as f64), GOAL_ACTIVATION_US, true),
        ));
        section.data = json!({
            "p50_us": summary.p50_us,
            "p99_us": summary.p99_us,
            "summary": summary,
        });
        Ok(section)
    })
}
