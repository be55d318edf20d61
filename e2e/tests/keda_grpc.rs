//! The KEDA stand-in's gRPC transport against a scripted `externalscaler.ExternalScaler`
//! server on 127.0.0.1: request and response mapping (metadata, metric names, float/int
//! fallbacks), the `StreamIsActive` stream, and a whole activation through the local API
//! server with the address table mapping `svc.ns:port` to the loopback port.
// Helpers outside `#[test]` fns unwrap too: any failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use keda_http_api::externalscaler::external_scaler_server::{
    ExternalScaler as ScalerService, ExternalScalerServer,
};
use keda_http_api::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef as ProtoRef,
};
use keda_http_api::scaled_object::ScaledObject;
use keda_http_e2e::keda::grpc::GrpcConnector;
use keda_http_e2e::keda::scaler::{ScaledObjectRef, ScalerConnector};
use keda_http_e2e::keda::{AddressTable, KedaConfig, KedaStandIn};
use kube::Api;
use kube::api::PostParams;
use kube_standin::LocalApiServer;
use tokio::sync::{broadcast, oneshot};
use tonic::{Request, Response, Status};

const BOUND: Duration = Duration::from_secs(60);

type Pushes = broadcast::Sender<bool>;

/// Scripted server: answers from its fields, records the requests it got.
#[derive(Clone)]
struct Script {
    active: Arc<Mutex<bool>>,
    pushes: Pushes,
    seen: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl ScalerService for Script {
    async fn is_active(
        &self,
        request: Request<ProtoRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("IsActive {}", request.get_ref().name));
        Ok(Response::new(IsActiveResponse {
            result: *self.active.lock().unwrap(),
        }))
    }

    type StreamIsActiveStream =
        Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send + 'static>>;

    async fn stream_is_active(
        &self,
        _request: Request<ProtoRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let rx = self.pushes.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|m| async move { m.ok() })
            .map(|result| Ok(IsActiveResponse { result }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ProtoRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let route = request
            .get_ref()
            .scaler_metadata
            .get("interceptorRoute")
            .cloned()
            .unwrap_or_default();
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![
                MetricSpec {
                    metric_name: format!("http_{route}_concurrency"),
                    target_size: 0,
                    target_size_float: 2.5,
                },
                MetricSpec {
                    metric_name: "legacy".into(),
                    target_size: 7,
                    target_size_float: 0.0,
                },
            ],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let name = request.into_inner().metric_name;
        self.seen.lock().unwrap().push(format!("GetMetrics {name}"));
        let value = if name == "legacy" {
            MetricValue {
                metric_name: name,
                metric_value: 3,
                metric_value_float: 0.0,
            }
        } else {
            MetricValue {
                metric_name: name,
                metric_value: 99,
                metric_value_float: 4.5,
            }
        };
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![value],
        }))
    }

    type StreamMetricSpecStream =
        Pin<Box<dyn Stream<Item = Result<GetMetricSpecResponse, Status>> + Send + 'static>>;

    async fn stream_metric_spec(
        &self,
        _request: Request<ProtoRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        Err(Status::unimplemented("not in this script"))
    }
}

struct Server {
    addr: std::net::SocketAddr,
    script: Script,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Self {
        let script = Script {
            active: Arc::default(),
            pushes: broadcast::channel(16).0,
            seen: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = ExternalScalerServer::new(script.clone());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        Self {
            addr,
            script,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
        let _ = self.task.await;
    }
}

fn so_ref() -> ScaledObjectRef {
    ScaledObjectRef {
        name: "app".into(),
        namespace: "default".into(),
        scaler_metadata: [("interceptorRoute".to_owned(), "app".to_owned())].into(),
    }
}

#[tokio::test]
async fn grpc_client_maps_requests_and_responses() {
    let server = Server::start().await;
    let scaler = GrpcConnector::new()
        .connect(&server.addr.to_string())
        .unwrap();
    let so = so_ref();

    let specs = tokio::time::timeout(BOUND, scaler.get_metric_spec(&so))
        .await
        .unwrap()
        .unwrap();
    let names: Vec<_> = specs.iter().map(|s| s.metric_name.as_str()).collect();
    assert_eq!(names, ["http_app_concurrency", "legacy"]);
    // targetSizeFloat wins when set; otherwise the deprecated integer is used.
    assert_eq!(specs[0].target(), 2.5);
    assert_eq!(specs[1].target(), 7.0);

    let values = scaler.get_metrics(&so, "legacy").await.unwrap();
    assert_eq!(values[0].value(), 3.0);
    let values = scaler
        .get_metrics(&so, "http_app_concurrency")
        .await
        .unwrap();
    assert_eq!(values[0].value(), 4.5);

    assert!(!scaler.is_active(&so).await.unwrap());
    *server.script.active.lock().unwrap() = true;
    assert!(scaler.is_active(&so).await.unwrap());

    let mut stream = scaler.stream_is_active(&so).await.unwrap();
    // The subscription exists once the response headers arrived; push after that.
    server.script.pushes.send(true).unwrap();
    server.script.pushes.send(false).unwrap();
    let first = tokio::time::timeout(BOUND, stream.next()).await.unwrap();
    assert!(first.unwrap().unwrap());
    let second = tokio::time::timeout(BOUND, stream.next()).await.unwrap();
    assert!(!second.unwrap().unwrap());

    let seen = server.script.seen.lock().unwrap().clone();
    assert!(seen.contains(&"GetMetrics legacy".to_owned()), "{seen:?}");
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn unreachable_scaler_is_an_rpc_error() {
    // Bind and drop to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let scaler = GrpcConnector::new()
        .connect(&format!("127.0.0.1:{port}"))
        .unwrap();
    let result = tokio::time::timeout(BOUND, scaler.is_active(&so_ref()))
        .await
        .unwrap();
    assert!(result.is_err());
    assert!(
        GrpcConnector::new()
            .connect("bad address with spaces")
            .is_err(),
        "an unparsable address is refused up front"
    );
}

#[tokio::test]
async fn stand_in_activates_through_grpc_and_the_address_table() {
    let server = Server::start().await;
    let api = LocalApiServer::start().await.unwrap();
    let client = api.client().await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let scaled_objects: Api<ScaledObject> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "app" },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app": "app" } },
            "template": { "metadata": { "labels": { "app": "app" } },
                          "spec": { "containers": [{ "name": "app", "image": "hello" }] } }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let addresses = AddressTable::new();
    addresses.insert(
        "keda-add-ons-http-external-scaler.keda:9090",
        &server.addr.to_string(),
    );
    let mut config = KedaConfig::fast();
    config.polling_interval = Some(Duration::from_secs(3600));
    config.hpa_sync_period = Duration::from_secs(3600);
    let keda = KedaStandIn::start(client, config, addresses, Arc::new(GrpcConnector::new()));
    let so: ScaledObject = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "app" },
        "spec": {
            "scaleTargetRef": { "name": "app" },
            "triggers": [{ "type": "external-push", "metadata": {
                "scalerAddress": "keda-add-ons-http-external-scaler.keda.svc.cluster.local:9090",
                "interceptorRoute": "app"
            }}]
        }
    }))
    .unwrap();
    scaled_objects
        .create(&PostParams::default(), &so)
        .await
        .unwrap();

    // Push `true` until the stream is up and the scale is written: the broadcast only reaches
    // subscribed streams, and the subscription has no observable event of its own.
    let activated = async {
        loop {
            let _ = server.script.pushes.send(true);
            let scale = deployments.get_scale("app").await.unwrap();
            if scale.spec.and_then(|s| s.replicas) == Some(1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(BOUND, activated).await.unwrap();
    // The first poll happened before any push and was inactive; the activation came from the
    // stream (IsActive was called at most once, by that first poll).
    let is_active_calls = server
        .script
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.starts_with("IsActive"))
        .count();
    assert!(is_active_calls <= 1, "{is_active_calls} IsActive calls");
    keda.stop().await;
    server.stop().await;
}
