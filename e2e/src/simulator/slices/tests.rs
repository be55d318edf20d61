use super::*;

fn service(selector: &[(&str, &str)]) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": "app", "namespace": "ns", "uid": "u-1" },
        "spec": {
            "selector": selector.iter().map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            "ports": [
                { "name": "http", "port": 8080, "targetPort": "http" },
                { "name": "h2", "port": 8081, "protocol": "TCP",
                  "appProtocol": "kubernetes.io/h2c" }
            ]
        }
    }))
    .unwrap()
}

fn pod(name: &str, port: Option<u16>, ready: bool, terminating: bool) -> PodView {
    PodView {
        name: name.to_owned(),
        addr: port.map(|p| std::net::SocketAddr::from(([198, 51, 100, 7], p))),
        ready,
        terminating,
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn selector_must_be_a_subset_of_the_pod_labels() {
    let pod_labels = labels(&[("app", "app"), ("tier", "web")]);
    assert!(selects(&service(&[("app", "app")]), &pod_labels));
    assert!(selects(
        &service(&[("app", "app"), ("tier", "web")]),
        &pod_labels
    ));
    assert!(!selects(&service(&[("app", "other")]), &pod_labels));
    assert!(!selects(
        &service(&[("app", "app"), ("x", "y")]),
        &pod_labels
    ));
    // No selector: selects nothing.
    assert!(!selects(&service(&[]), &pod_labels));
}

#[test]
fn slice_has_one_endpoint_with_the_pods_port_under_every_service_port_name() {
    let slice = endpoint_slice(
        &service(&[("app", "app")]),
        &pod("app-a", Some(41000), true, false),
    )
    .unwrap();
    assert_eq!(slice["metadata"]["name"], "app-app-a");
    assert_eq!(slice["metadata"]["namespace"], "ns");
    assert_eq!(slice["metadata"]["labels"][SERVICE_NAME_LABEL], "app");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "u-1");
    assert_eq!(slice["addressType"], "IPv4");
    let endpoints = slice["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["addresses"], json!(["198.51.100.7"]));
    assert_eq!(endpoints[0]["targetRef"]["name"], "app-a");
    assert_eq!(
        slice["ports"],
        json!([
            { "name": "http", "port": 41000, "protocol": "TCP" },
            { "name": "h2", "port": 41000, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c" }
        ])
    );
    // The slice parses as a typed EndpointSlice.
    let typed: k8s_openapi::api::discovery::v1::EndpointSlice =
        serde_json::from_value(slice).unwrap();
    assert_eq!(typed.endpoints.map(|e| e.len()), Some(1));
}

#[test]
fn conditions_follow_readiness_and_termination() {
    let svc = service(&[("app", "app")]);
    // (ready, terminating) -> (ready, serving, terminating)
    let table = [
        ((false, false), (false, false, false)),
        ((true, false), (true, true, false)),
        ((true, true), (false, true, true)),
        ((false, true), (false, false, true)),
    ];
    for ((ready, terminating), (r, s, t)) in table {
        let slice = endpoint_slice(&svc, &pod("p", Some(1), ready, terminating)).unwrap();
        let c = &slice["endpoints"][0]["conditions"];
        assert_eq!(
            (
                c["ready"].as_bool(),
                c["serving"].as_bool(),
                c["terminating"].as_bool()
            ),
            (Some(r), Some(s), Some(t)),
            "ready {ready}, terminating {terminating}"
        );
    }
}

#[test]
fn no_slice_before_the_pod_has_a_port() {
    assert!(endpoint_slice(&service(&[("app", "app")]), &pod("p", None, false, false)).is_none());
}

#[test]
fn counts_and_status() {
    let pods = [
        pod("a", Some(1), true, false),
        pod("b", Some(2), false, false),
        pod("c", Some(3), true, true),
    ];
    let c = counts(&pods);
    assert_eq!(
        c,
        Counts {
            replicas: 2,
            ready: 1
        }
    );
    let status = deployment_status(c, 3, Some(4));
    assert_eq!(
        status,
        json!({ "status": {
            "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1,
            "unavailableReplicas": 2, "observedGeneration": 4
        }})
    );
}

#[test]
fn scale_down_removes_not_ready_then_newest() {
    let pods = [
        pod("old-ready", Some(1), true, false),
        pod("mid-not-ready", Some(2), false, false),
        pod("new-ready", Some(3), true, false),
        pod("already-going", Some(4), true, true),
    ];
    assert_eq!(victims(&pods, 3), Vec::<String>::new());
    assert_eq!(victims(&pods, 2), vec!["mid-not-ready"]);
    assert_eq!(victims(&pods, 1), vec!["mid-not-ready", "new-ready"]);
    assert_eq!(
        victims(&pods, 0),
        vec!["mid-not-ready", "new-ready", "old-ready"]
    );
}
