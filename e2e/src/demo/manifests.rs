//! The hello app's objects as the hello chart renders them (`charts/hello`, mode
//! `interceptorRoute`, release `hello`), with the demo's values filled in: the Service, the
//! Deployment (no `replicas`: KEDA owns the count), the InterceptorRoute and the ScaledObject.

/// The demo's chart values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloValues {
    /// `hosts[0]`.
    pub host: String,
    /// `scaling.targetConcurrency`.
    pub target_concurrency: u32,
    /// `scaling.maxReplicas`.
    pub max_replicas: u32,
    /// `scaling.cooldownPeriod` (seconds).
    pub cooldown_seconds: u32,
    /// `scaling.pollingInterval` (seconds).
    pub polling_seconds: u32,
    /// `app.delayMs`: how long each request takes.
    pub delay_ms: u32,
}

impl Default for HelloValues {
    fn default() -> Self {
        Self {
            host: "hello.example.com".to_owned(),
            target_concurrency: 2,
            max_replicas: 10,
            cooldown_seconds: 10,
            polling_seconds: 1,
            delay_ms: 200,
        }
    }
}

/// The rendered YAML (four documents, namespace left to the caller).
pub fn hello_yaml(v: &HelloValues) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: hello
  labels: {{app.kubernetes.io/name: hello, app.kubernetes.io/instance: hello}}
spec:
  type: ClusterIP
  ports:
    - name: http
      port: 8080
      targetPort: http
      protocol: TCP
  selector:
    app.kubernetes.io/name: hello
    app.kubernetes.io/instance: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  labels: {{app.kubernetes.io/name: hello, app.kubernetes.io/instance: hello}}
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: hello
      app.kubernetes.io/instance: hello
  template:
    metadata:
      labels:
        app.kubernetes.io/name: hello
        app.kubernetes.io/instance: hello
    spec:
      terminationGracePeriodSeconds: 37
      containers:
        - name: hello
          image: ghcr.io/keda-http/keda-http-hello:0.1.0
          env:
            - {{name: PORT, value: "8080"}}
            - {{name: DELAY_MS, value: "{delay}"}}
            - {{name: MAX_DELAY_MS, value: "30000"}}
            - {{name: SHUTDOWN_DELAY_MS, value: "2000"}}
            - {{name: DRAIN_TIMEOUT_MS, value: "30000"}}
          ports:
            - name: http
              containerPort: 8080
              protocol: TCP
          readinessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 1
---
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata:
  name: hello
spec:
  target:
    service: hello
    portName: http
  rules:
    - hosts: ["{host}"]
  scalingMetric:
    concurrency:
      targetValue: {target}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: hello
spec:
  scaleTargetRef:
    name: hello
  minReplicaCount: 0
  maxReplicaCount: {max}
  cooldownPeriod: {cooldown}
  pollingInterval: {polling}
  triggers:
    - type: external-push
      metadata:
        scalerAddress: "keda-add-ons-http-external-scaler.keda:9090"
        interceptorRoute: "hello"
"#,
        delay = v.delay_ms,
        host = v.host,
        target = v.target_concurrency,
        max = v.max_replicas,
        cooldown = v.cooldown_seconds,
        polling = v.polling_seconds,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::manifests::{gvk_of, parse_documents};

    #[test]
    fn renders_four_objects_that_parse_as_their_types() {
        let docs = parse_documents(&hello_yaml(&HelloValues::default())).unwrap();
        let kinds: Vec<String> = docs.iter().map(|d| gvk_of(d).unwrap().kind).collect();
        assert_eq!(
            kinds,
            ["Service", "Deployment", "InterceptorRoute", "ScaledObject"]
        );
        let _: k8s_openapi::api::apps::v1::Deployment =
            serde_json::from_value(docs[1].clone()).unwrap();
        let route: keda_http_api::interceptor_route::InterceptorRoute =
            serde_json::from_value(docs[2].clone()).unwrap();
        assert_eq!(
            route
                .spec
                .scaling_metric
                .concurrency
                .map(|c| c.target_value),
            Some(2)
        );
        let so: keda_http_api::scaled_object::ScaledObject =
            serde_json::from_value(docs[3].clone()).unwrap();
        assert_eq!(so.spec.cooldown_period, Some(10));
    }
}
