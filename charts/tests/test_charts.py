"""Chart tests: rendered objects, the official chart contract, schemas and env wiring.

Run by scripts/test-charts.sh with the tools it installs (.tools/bin/helm, the venv's
kubernetes-validate, jsonschema and pytest). Contract: docs/compat.md §10.
"""

import copy
import json
import os
import pathlib
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
ADDON = ROOT / "charts" / "keda-add-ons-http"
HELLO = ROOT / "charts" / "hello"
HELM = os.environ.get("HELM", str(ROOT / ".tools" / "bin" / "helm"))
NS = "keda"
# The chart's kubeVersion floor is 1.23; kubernetes-validate's oldest schemas are 1.25.
K8S_VERSIONS = ["1.25.0", kubernetes_validate.utils.latest_version()]
CR_GROUPS = ("keda.sh", "http.keda.sh")


def helm(*args, check=True):
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check)


def render(chart, *args, release="http-add-on", namespace=NS):
    out = helm("template", release, str(chart), "-n", namespace, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs, kind, name=None):
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert hits, f"no {kind} {name or ''}"
    return hits[0] if name else hits


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.fixture(scope="session")
def addon_default():
    return render(ADDON)


@pytest.fixture(scope="session")
def addon_all():
    return render(ADDON, "-f", str(ADDON / "ci" / "all-values.yaml"))


@pytest.fixture(scope="session")
def hello_renders():
    return {
        "interceptorRoute": render(HELLO, release="hello", namespace="default"),
        "httpScaledObject": render(HELLO, "--set", "mode=httpScaledObject", release="hello",
                                   namespace="default"),
        "all-values": render(HELLO, "-f", str(HELLO / "ci" / "all-values.yaml"), release="hello",
                             namespace="default"),
    }


@pytest.fixture(scope="session")
def values():
    return yaml.safe_load((ADDON / "values.yaml").read_text())


# ---------------------------------------------------------------- schema validation

def all_renders(addon_default, addon_all, hello_renders):
    yield "addon-default", addon_default
    yield "addon-all-values", addon_all
    for mode, docs in hello_renders.items():
        yield f"hello-{mode}", docs


def test_builtin_objects_validate_against_kubernetes_schemas(addon_default, addon_all, hello_renders):
    checked = 0
    for label, docs in all_renders(addon_default, addon_all, hello_renders):
        for doc in docs:
            group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
            if group in CR_GROUPS:
                continue
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    pytest.fail(f"{label}: {doc['kind']}/{doc['metadata']['name']} on {version}: "
                                f"{e.message} at {list(e.path)}")
            checked += 1
    assert checked > 40


def strict_schema(schema):
    """Kubernetes prunes unknown fields; kubectl's strict validation rejects them. Make the
    CRD's structural schema say so, so a misspelt field in our own CRs fails here."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if not isinstance(s, dict):
            return
        if (s.get("type") == "object" and "properties" in s and "additionalProperties" not in s
                and not s.get("x-kubernetes-preserve-unknown-fields")):
            s["additionalProperties"] = False
        for v in s.values():
            if isinstance(v, dict):
                walk(v)
            elif isinstance(v, list):
                for item in v:
                    walk(item)

    # kube-rs leaves the root's apiVersion/kind/metadata out of the schema; the API server
    # always knows them.
    schema.setdefault("properties", {})
    for key in ("apiVersion", "kind"):
        schema["properties"].setdefault(key, {"type": "string"})
    schema["properties"].setdefault("metadata", {"type": "object"})
    walk(schema)
    return schema


def crd_schemas(docs):
    out = {}
    for crd in find(docs, "CustomResourceDefinition"):
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            out[(f"{group}/{v['name']}", kind)] = strict_schema(v["schema"]["openAPIV3Schema"])
    return out


def test_our_custom_resources_validate_against_our_crds(addon_default, hello_renders):
    schemas = crd_schemas(addon_default)
    seen = set()
    for docs in hello_renders.values():
        for doc in docs:
            key = (doc["apiVersion"], doc["kind"])
            if key[0].split("/")[0] != "http.keda.sh":
                continue
            assert key in schemas, f"no CRD serves {key}"
            jsonschema.Draft7Validator(schemas[key]).validate(doc)
            seen.add(doc["kind"])
    assert seen == {"InterceptorRoute", "HTTPScaledObject"}


def test_crd_schema_rejects_a_bad_route(addon_default):
    schema = crd_schemas(addon_default)[("http.keda.sh/v1beta1", "InterceptorRoute")]
    bad = {"apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
           "metadata": {"name": "x"},
           "spec": {"target": {"service": "x", "port": 80}, "scalingMetric": {}, "rulez": []}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(bad)


# The fields of KEDA's ScaledObject (keda.sh/v1alpha1) spec, so a misspelt field in our
# templates (minReplicas for minReplicaCount) fails here; KEDA's own CRD is not available
# offline. Trigger metadata must be a map of strings.
KEDA_SCALEDOBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object", "additionalProperties": False, "required": ["name"],
                    "properties": {"name": {"type": "string", "minLength": 1},
                                   "kind": {"type": "string"}, "apiVersion": {"type": "string"},
                                   "envSourceContainerName": {"type": "string"}}},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "advanced": {"type": "object"},
                "fallback": {"type": "object"},
                "triggers": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"enum": ["external", "external-push"]},
                            "name": {"type": "string"},
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object"}}}},
            },
        },
    },
}


def test_scaledobjects_are_well_formed(addon_default, addon_all, hello_renders):
    seen = 0
    for label, docs in all_renders(addon_default, addon_all, hello_renders):
        for so in [d for d in docs if d["kind"] == "ScaledObject"]:
            try:
                jsonschema.Draft7Validator(KEDA_SCALEDOBJECT_SCHEMA).validate(so)
            except jsonschema.ValidationError as e:
                pytest.fail(f"{label}: ScaledObject {so['metadata']['name']}: {e.message} at {list(e.path)}")
            spec = so["spec"]
            assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100), label
            seen += 1
    assert seen >= 4


# ---------------------------------------------------------------- the official contract

EXPECTED_OBJECTS = {
    ("Deployment", "keda-add-ons-http-interceptor"),
    ("Deployment", "keda-add-ons-http-external-scaler"),
    ("Deployment", "keda-add-ons-http-controller-manager"),
    ("Service", "keda-add-ons-http-interceptor-admin"),
    ("Service", "keda-add-ons-http-interceptor-proxy"),
    ("Service", "keda-add-ons-http-external-scaler"),
    ("Service", "keda-add-ons-http-controller-manager-metrics-service"),
    ("ScaledObject", "keda-add-ons-http-interceptor"),
    ("PodDisruptionBudget", "keda-add-ons-http-interceptor"),
    ("ServiceAccount", "keda-add-ons-http-interceptor"),
    ("ServiceAccount", "keda-add-ons-http-external-scaler"),
    ("ServiceAccount", "keda-add-ons-http"),
    ("ClusterRole", "http-add-on-interceptor"),
    ("ClusterRoleBinding", "http-add-on-interceptor"),
    ("ClusterRole", "http-add-on-external-scaler"),
    ("ClusterRoleBinding", "http-add-on-external-scaler"),
    ("ClusterRole", "http-add-on-role"),
    ("ClusterRoleBinding", "http-add-on-rolebinding"),
    ("ClusterRole", "http-add-on-metrics-reader"),
    ("ClusterRoleBinding", "http-add-on-auth-delegator"),
    ("Role", "keda-add-ons-http-role"),
    ("RoleBinding", "keda-add-ons-http-role-rolebinding"),
    ("CustomResourceDefinition", "httpscaledobjects.http.keda.sh"),
    ("CustomResourceDefinition", "interceptorroutes.http.keda.sh"),
}


def test_object_names_match_the_official_chart(addon_default):
    got = {(d["kind"], d["metadata"]["name"]) for d in addon_default}
    assert got == EXPECTED_OBJECTS


def test_names_do_not_depend_on_the_release_name():
    docs = render(ADDON, release="something-else")
    names = {d["metadata"]["name"] for d in docs if d["kind"] in ("Deployment", "Service")}
    assert all(n.startswith("keda-add-ons-http-") for n in names), names


def ports(svc):
    return {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}


def test_service_ports(addon_default, addon_all):
    d = addon_default
    assert ports(find(d, "Service", "keda-add-ons-http-interceptor-admin")) == {"admin": (9090, "admin")}
    assert ports(find(d, "Service", "keda-add-ons-http-interceptor-proxy")) == {"proxy": (8080, "proxy")}
    assert ports(find(d, "Service", "keda-add-ons-http-external-scaler")) == {
        "grpc": (9090, "grpc"), "metrics": (2223, "metrics")}
    assert ports(find(d, "Service", "keda-add-ons-http-controller-manager-metrics-service")) == {
        "metrics": (8443, "metrics")}
    a = addon_all
    assert ports(find(a, "Service", "keda-add-ons-http-interceptor-proxy")) == {
        "proxy": (8081, "proxy"), "proxy-tls": (8444, "proxy-tls")}
    # Every targetPort names a port that the selected container declares.
    for docs in (d, a):
        for svc in find(docs, "Service"):
            sel = svc["spec"]["selector"]
            dep = next(x for x in find(docs, "Deployment")
                       if all(x["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items()))
            declared = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            for p in svc["spec"]["ports"]:
                assert p["targetPort"] in declared, (svc["metadata"]["name"], p)


def test_selector_labels(addon_default):
    for dep in find(addon_default, "Deployment"):
        sel = dep["spec"]["selector"]["matchLabels"]
        assert sel["app.kubernetes.io/name"] == "http-add-on"
        assert sel["app.kubernetes.io/part-of"] == "keda-add-ons-http"
        assert sel["app.kubernetes.io/component"] in ("interceptor", "scaler", "operator")
        assert sel["app.kubernetes.io/instance"] == "http-add-on"
        pod = dep["spec"]["template"]["spec"]
        assert pod["nodeSelector"]["kubernetes.io/os"] == "linux"


def test_interceptor_scaledobject(addon_default):
    so = find(addon_default, "ScaledObject", "keda-add-ons-http-interceptor")["spec"]
    assert (so["minReplicaCount"], so["maxReplicaCount"], so["pollingInterval"]) == (3, 50, 1)
    assert so["scaleTargetRef"] == {"name": "keda-add-ons-http-interceptor", "kind": "Deployment"}
    (trigger,) = so["triggers"]
    assert trigger["type"] == "external"
    assert trigger["metadata"] == {
        "scalerAddress": "keda-add-ons-http-external-scaler.keda:9090",
        "interceptorTargetPendingRequests": "200"}


def test_interceptor_deployment_has_no_replicas_and_the_official_probes(addon_default):
    dep = find(addon_default, "Deployment", "keda-add-ons-http-interceptor")
    assert "replicas" not in dep["spec"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 45
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    scaler = find(addon_default, "Deployment", "keda-add-ons-http-external-scaler")
    assert scaler["spec"]["replicas"] == 3
    (s,) = scaler["spec"]["template"]["spec"]["containers"]
    assert s["livenessProbe"]["grpc"]["service"] == "liveness"
    assert s["readinessProbe"]["grpc"]["service"] == "readiness"


def test_pdb_defaults(addon_default, addon_all):
    spec = find(addon_default, "PodDisruptionBudget")[0]["spec"]
    assert spec["maxUnavailable"] == 1 and "minAvailable" not in spec
    spec = find(addon_all, "PodDisruptionBudget")[0]["spec"]
    assert spec["minAvailable"] == 1 and "maxUnavailable" not in spec


# compat §10.2: key -> official default. Image repositories are ours (documented).
OFFICIAL_DEFAULTS = {
    "images.tag": "",
    "crds.install": True,
    "operator.replicas": 1,
    "operator.watchNamespace": "",
    "operator.port": 8443,
    "operator.metrics.secure": True,
    "operator.metrics.auth": True,
    "operator.metrics.certDir": "",
    "scaler.replicas": 3,
    "scaler.service": "external-scaler",
    "scaler.grpcPort": 9090,
    "scaler.pendingRequestsInterceptor": 200,
    "scaler.streamInterval": 200,
    "scaler.metrics.prometheus.enabled": True,
    "scaler.metrics.prometheus.port": 2223,
    "scaler.metrics.otlp.enabled": False,
    "scaler.tracing.enabled": False,
    "scaler.tracing.protocol": "console",
    "interceptor.admin.service": "interceptor-admin",
    "interceptor.admin.port": 9090,
    "interceptor.admin.appProtocol": "",
    "interceptor.proxy.service": "interceptor-proxy",
    "interceptor.proxy.port": 8080,
    "interceptor.proxy.appProtocol": "",
    "interceptor.replicas.min": 3,
    "interceptor.replicas.max": 50,
    "interceptor.replicas.waitTimeout": "",
    "interceptor.scaledObject.pollingInterval": 1,
    "interceptor.shutdownDelay": "5s",
    "interceptor.drainTimeout": "30s",
    "interceptor.terminationGracePeriodSeconds": 45,
    "interceptor.requestTimeout": "",
    "interceptor.responseHeaderTimeout": "",
    "interceptor.readinessTimeout": "",
    "interceptor.tcpConnectTimeout": "",
    "interceptor.maxIdleConns": 1000,
    "interceptor.maxIdleConnsPerHost": 200,
    "interceptor.directPodRouting": True,
    "interceptor.tls.enabled": False,
    "interceptor.tls.certPath": "/certs/tls.crt",
    "interceptor.tls.keyPath": "/certs/tls.key",
    "interceptor.tls.certSecret": "keda-tls-certs",
    "interceptor.tls.port": 8443,
    "interceptor.tls.appProtocol": "",
    "interceptor.tls.skipVerify": False,
    "interceptor.tls.minVersion": "",
    "interceptor.tls.maxVersion": "",
    "interceptor.tls.cipherSuites": "",
    "interceptor.tls.curvePreferences": "",
    "interceptor.tls.caDirs": [],
    "interceptor.pdb.enabled": True,
    "interceptor.pdb.minAvailable": 0,
    "interceptor.pdb.maxUnavailable": 1,
    "interceptor.extraVolumes": [],
    "interceptor.extraVolumeMounts": [],
    "rbac.aggregateToDefaultRoles": False,
    "securityContext.allowPrivilegeEscalation": False,
    "securityContext.capabilities.drop": ["ALL"],
    "securityContext.privileged": False,
    "securityContext.readOnlyRootFilesystem": True,
    "podSecurityContext.fsGroup": 1000,
    "podSecurityContext.supplementalGroups": [1000],
    "additionalLabels": {},
}
for _c in ("operator", "scaler", "interceptor"):
    OFFICIAL_DEFAULTS[f"images.{_c}"] = None  # present; our repository, not kedacore's
    OFFICIAL_DEFAULTS[f"{_c}.pullPolicy"] = "Always"
    OFFICIAL_DEFAULTS[f"{_c}.imagePullSecrets"] = []
    OFFICIAL_DEFAULTS[f"{_c}.extraEnvs"] = {}
    OFFICIAL_DEFAULTS[f"{_c}.resources"] = {
        "limits": {"cpu": 0.5, "memory": "64Mi"}, "requests": {"cpu": "250m", "memory": "20Mi"}}
    for _k, _d in (("nodeSelector", {}), ("tolerations", []), ("affinity", {}),
                   ("topologySpreadConstraints", []), ("podAnnotations", {})):
        OFFICIAL_DEFAULTS[f"{_c}.{_k}"] = _d
    OFFICIAL_DEFAULTS[f"logging.{_c}.level"] = "info"
    OFFICIAL_DEFAULTS[f"logging.{_c}.format"] = "console"
    OFFICIAL_DEFAULTS[f"logging.{_c}.timeEncoding"] = "rfc3339"
    OFFICIAL_DEFAULTS[f"logging.{_c}.stackTracesEnabled"] = False
for _c, _p in (("operator", 8085), ("interceptor", 8086), ("scaler", 8087)):
    OFFICIAL_DEFAULTS[f"profiling.{_c}.enabled"] = False
    OFFICIAL_DEFAULTS[f"profiling.{_c}.port"] = _p


def lookup(tree, dotted):
    node = tree
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"values.yaml lacks {dotted}"
        node = node[part]
    return node


# Keys whose default we change on purpose: key -> (official default, ours). Each is listed in
# the README's "Migrating" table with the reason.
DELIBERATE_DEFAULTS = {
    # A bounded hold queue by default: a burst against one cold app must not exhaust the
    # shared interceptor. 0 still means unlimited.
    "interceptor.coldStart.maxPendingRequests": (0, 1000),
}


@pytest.mark.parametrize("key", sorted(DELIBERATE_DEFAULTS))
def test_deliberately_different_defaults(values, key):
    official, ours = DELIBERATE_DEFAULTS[key]
    assert key not in OFFICIAL_DEFAULTS
    assert lookup(values, key) == ours != official


@pytest.mark.parametrize("key", sorted(OFFICIAL_DEFAULTS))
def test_official_values_key_and_default(values, key):
    got = lookup(values, key)
    want = OFFICIAL_DEFAULTS[key]
    if want is None:
        assert isinstance(got, str) and got
    else:
        assert got == want, f"{key}: {got!r} != official {want!r}"


# ---------------------------------------------------------------- values and the schema

def leaf_paths(tree, prefix=""):
    if isinstance(tree, dict) and tree:
        for k, v in tree.items():
            yield from leaf_paths(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip(".")


def schema_allows(schema, dotted):
    defs = schema.get("definitions", {})
    node = schema
    for part in dotted.split("."):
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif node.get("additionalProperties") is False:
            return False
        else:
            return True  # a free-form object (securityContext, affinity, ...)
    return True


def test_every_values_key_is_in_the_schema(values):
    schema = json.loads((ADDON / "values.schema.json").read_text())
    all_values = yaml.safe_load((ADDON / "ci" / "all-values.yaml").read_text())
    missing = [p for tree in (values, all_values) for p in leaf_paths(tree) if not schema_allows(schema, p)]
    assert not missing


@pytest.mark.parametrize("chart", [ADDON, HELLO], ids=lambda c: c.name)
def test_all_values_file_sets_every_key(chart):
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    all_values = yaml.safe_load((chart / "ci" / "all-values.yaml").read_text())
    set_paths = set(leaf_paths(all_values))
    absent = [p for p in leaf_paths(defaults) if p not in set_paths
              and not any(q.startswith(p + ".") for q in set_paths)]
    assert not absent


def test_schema_rejects_a_typo():
    r = helm("template", "x", str(ADDON), "--set", "interceptor.drainTimout=10s", check=False)
    assert r.returncode != 0 and "drainTimout" in r.stderr


def test_schema_rejects_a_bad_duration():
    r = helm("template", "x", str(ADDON), "--set", "interceptor.requestTimeout=10 seconds", check=False)
    assert r.returncode != 0


def test_old_values_with_removed_keys_still_render():
    # Values files written for the official chart may still carry keys it removed in v0.14;
    # they are accepted (and NOTES.txt warns about them) rather than failing the upgrade.
    for key in ("keepAlive", "idleConnTimeout", "tlsHandshakeTimeout", "expectContinueTimeout"):
        r = helm("template", "x", str(ADDON), "--set", f"interceptor.{key}=1s", check=False)
        assert r.returncode == 0, r.stderr
        assert key in (ADDON / "templates" / "NOTES.txt").read_text()


def test_grace_period_must_exceed_shutdown_delay_plus_drain():
    r = helm("template", "x", str(ADDON), "--set", "interceptor.drainTimeout=1m",
             "--set", "interceptor.terminationGracePeriodSeconds=60", check=False)
    assert r.returncode != 0
    assert "terminationGracePeriodSeconds (60) must be greater than" in r.stderr
    ok = helm("template", "x", str(ADDON), "--set", "interceptor.drainTimeout=1m",
              "--set", "interceptor.terminationGracePeriodSeconds=66", check=False)
    assert ok.returncode == 0, ok.stderr


# ---------------------------------------------------------------- env wiring

def container(docs, deployment):
    (c,) = find(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return c


def test_interceptor_env_defaults(addon_default):
    env = env_of(container(addon_default, "keda-add-ons-http-interceptor"))
    assert env["KEDA_HTTP_PROXY_PORT"] == "8080"
    assert env["KEDA_HTTP_ADMIN_PORT"] == "9090"
    assert env["KEDA_HTTP_SHUTDOWN_DELAY"] == "5s"
    assert env["KEDA_HTTP_DRAIN_TIMEOUT"] == "30s"
    # The hold queue is bounded by default, as the binary's own default (README "cold start").
    assert env["KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS"] == "1000"
    # Empty timeouts leave the env unset, so the binaries' defaults apply.
    # OTLP export off leaves its variables to extraEnvs (the official chart's only way).
    for unset in ("KEDA_HTTP_REQUEST_TIMEOUT", "KEDA_HTTP_RESPONSE_HEADER_TIMEOUT",
                  "KEDA_HTTP_READINESS_TIMEOUT", "KEDA_HTTP_CONNECT_TIMEOUT",
                  "OTEL_EXPORTER_OTLP_METRICS_ENABLED", "OTEL_EXPORTER_OTLP_TRACES_ENABLED"):
        assert unset not in env


def test_every_value_reaches_its_env(addon_all):
    i = env_of(container(addon_all, "keda-add-ons-http-interceptor"))
    assert {k: i[k] for k in (
        "KEDA_HTTP_PROXY_PORT", "KEDA_HTTP_ADMIN_PORT", "KEDA_HTTP_WATCH_NAMESPACE",
        "KEDA_HTTP_SHUTDOWN_DELAY", "KEDA_HTTP_DRAIN_TIMEOUT", "KEDA_HTTP_REQUEST_TIMEOUT",
        "KEDA_HTTP_RESPONSE_HEADER_TIMEOUT", "KEDA_HTTP_READINESS_TIMEOUT", "KEDA_HTTP_CONNECT_TIMEOUT",
        "KEDA_HTTP_MAX_IDLE_CONNS", "KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST", "KEDA_HTTP_DIRECT_POD_ROUTING",
        "KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS", "KEDA_HTTP_PROXY_TLS_ENABLED",
        "KEDA_HTTP_PROXY_TLS_CERT_PATH", "KEDA_HTTP_PROXY_TLS_KEY_PATH", "KEDA_HTTP_PROXY_TLS_PORT",
        "KEDA_HTTP_PROXY_TLS_SKIP_VERIFY", "KEDA_HTTP_PROXY_TLS_MIN_VERSION",
        "KEDA_HTTP_PROXY_TLS_MAX_VERSION", "KEDA_HTTP_PROXY_TLS_CIPHER_SUITES",
        "KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES", "KEDA_HTTP_TLS_CA_DIRS", "PROFILING_BIND_ADDRESS",
        "KEDA_HTTP_LOG_REQUESTS")} == {
        "KEDA_HTTP_PROXY_PORT": "8081", "KEDA_HTTP_ADMIN_PORT": "9092",
        "KEDA_HTTP_WATCH_NAMESPACE": "apps", "KEDA_HTTP_SHUTDOWN_DELAY": "2s",
        "KEDA_HTTP_DRAIN_TIMEOUT": "1m30s", "KEDA_HTTP_REQUEST_TIMEOUT": "60s",
        "KEDA_HTTP_RESPONSE_HEADER_TIMEOUT": "30s", "KEDA_HTTP_READINESS_TIMEOUT": "15s",
        "KEDA_HTTP_CONNECT_TIMEOUT": "750ms", "KEDA_HTTP_MAX_IDLE_CONNS": "500",
        "KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST": "50", "KEDA_HTTP_DIRECT_POD_ROUTING": "false",
        "KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS": "250", "KEDA_HTTP_PROXY_TLS_ENABLED": "true",
        "KEDA_HTTP_PROXY_TLS_CERT_PATH": "/certs/custom.crt",
        "KEDA_HTTP_PROXY_TLS_KEY_PATH": "/certs/custom.key", "KEDA_HTTP_PROXY_TLS_PORT": "8444",
        "KEDA_HTTP_PROXY_TLS_SKIP_VERIFY": "true", "KEDA_HTTP_PROXY_TLS_MIN_VERSION": "1.2",
        "KEDA_HTTP_PROXY_TLS_MAX_VERSION": "1.3",
        "KEDA_HTTP_PROXY_TLS_CIPHER_SUITES": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES": "X25519,CurveP256",
        "KEDA_HTTP_TLS_CA_DIRS": "/etc/ca/one,/etc/ca/two",
        "PROFILING_BIND_ADDRESS": "127.0.0.1:9086", "KEDA_HTTP_LOG_REQUESTS": "true"}
    assert {k: i[k] for k in ("OTEL_EXPORTER_OTLP_METRICS_ENABLED", "OTEL_EXPORTER_OTLP_TRACES_ENABLED",
                              "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")} == {
        "OTEL_EXPORTER_OTLP_METRICS_ENABLED": "true", "OTEL_EXPORTER_OTLP_TRACES_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
    ic = container(addon_all, "keda-add-ons-http-interceptor")
    assert ic["args"] == ["--zap-log-level=debug", "--zap-encoder=json", "--zap-time-encoding=millis",
                          "--zap-stacktrace-level=error"]
    assert {"name": "certs", "mountPath": "/certs", "readOnly": True} in ic["volumeMounts"]
    pod = find(addon_all, "Deployment", "keda-add-ons-http-interceptor")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 100
    assert {"name": "certs", "secret": {"secretName": "my-tls"}} in pod["volumes"]

    s = env_of(container(addon_all, "keda-add-ons-http-external-scaler"))
    assert s == {
        "KEDA_HTTP_SCALER_PORT": "9191", "KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE": NS,
        "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE": "keda-add-ons-http-interceptor-admin",
        "KEDA_HTTP_SCALER_TARGET_ADMIN_PORT": "9092", "KEDA_HTTP_SCALER_STREAM_INTERVAL_MS": "100",
        "OTEL_PROM_EXPORTER_ENABLED": "true", "OTEL_PROM_EXPORTER_PORT": "2224",
        "OTEL_EXPORTER_OTLP_METRICS_ENABLED": "true", "OTEL_EXPORTER_OTLP_TRACES_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "PROFILING_BIND_ADDRESS": "127.0.0.1:9087",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318"}
    so = find(addon_all, "ScaledObject", "keda-add-ons-http-interceptor")["spec"]
    assert so["triggers"][0]["metadata"] == {
        "scalerAddress": "keda-add-ons-http-external-scaler.keda:9191",
        "interceptorTargetPendingRequests": "150"}

    o = container(addon_all, "keda-add-ons-http-controller-manager")
    oe = env_of(o)
    assert oe["KEDA_HTTP_OPERATOR_WATCH_NAMESPACE"] == "apps"
    assert oe["KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE"] == "keda-add-ons-http-external-scaler"
    assert oe["KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT"] == "9191"
    assert oe["EXTRA_OPERATOR"] == "1"
    for arg in ("--leader-elect", "--metrics-bind-address=:8444", "--metrics-secure=false",
                "--metrics-auth=false", "--metrics-cert-dir=/certs/metrics",
                "--profiling-bind-address=127.0.0.1:9085", "--zap-log-level=debug"):
        assert arg in o["args"]


def test_deprecated_tls_and_wait_timeout_keys_are_honoured():
    docs = render(ADDON, "--set", "interceptor.tls.enabled=true", "--set", "interceptor.tls.cert_path=/c/a.crt",
                  "--set", "interceptor.replicas.waitTimeout=12s")
    env = env_of(container(docs, "keda-add-ons-http-interceptor"))
    assert env["KEDA_HTTP_PROXY_TLS_CERT_PATH"] == "/c/a.crt"
    assert env["KEDA_HTTP_READINESS_TIMEOUT"] == "12s"


# ---------------------------------------------------------------- safety and switches

def test_crds_are_kept_on_uninstall_and_can_be_skipped(addon_default):
    for crd in find(addon_default, "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    docs = render(ADDON, "--set", "crds.install=false")
    assert not [d for d in docs if d["kind"] == "CustomResourceDefinition"]


def test_operator_replicas_zero_removes_the_operator():
    docs = render(ADDON, "--set", "operator.replicas=0")
    names = {d["metadata"]["name"] for d in docs}
    assert not any("controller-manager" in n for n in names)
    assert "keda-add-ons-http" not in names  # operator ServiceAccount


def test_every_pod_is_non_root_read_only_and_drops_capabilities(addon_default, addon_all, hello_renders):
    for label, docs in all_renders(addon_default, addon_all, hello_renders):
        for dep in [d for d in docs if d["kind"] == "Deployment"]:
            pod = dep["spec"]["template"]["spec"]
            for c in pod["containers"]:
                sc = c.get("securityContext", {})
                non_root = sc.get("runAsNonRoot", pod.get("securityContext", {}).get("runAsNonRoot"))
                where = f"{label} {dep['metadata']['name']}"
                assert non_root is True, where
                assert sc.get("readOnlyRootFilesystem") is True, where
                assert sc.get("allowPrivilegeEscalation") is False, where
                assert "ALL" in sc.get("capabilities", {}).get("drop", []), where


def test_rbac_is_least_privilege(addon_default):
    for role in [d for d in addon_default if d["kind"] in ("ClusterRole", "Role")]:
        for rule in role["rules"]:
            assert "*" not in rule.get("verbs", []), role["metadata"]["name"]
            assert "*" not in rule.get("resources", []), role["metadata"]["name"]
    for name in ("http-add-on-interceptor", "http-add-on-external-scaler"):
        for rule in find(addon_default, "ClusterRole", name)["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, name
    for sa in ("keda-add-ons-http-interceptor", "keda-add-ons-http-external-scaler", "keda-add-ons-http"):
        bound = [b for b in addon_default if b["kind"] in ("ClusterRoleBinding", "RoleBinding")
                 and any(s["name"] == sa for s in b["subjects"])]
        assert bound, f"{sa} has no binding"


def test_operator_can_check_target_services_and_record_events(addon_default):
    """The operator reports ServiceNotFound on InterceptorRoutes and records Events on
    HTTPScaledObjects in their own namespaces, so its ClusterRole must allow both."""
    rules = find(addon_default, "ClusterRole", "http-add-on-role")["rules"]

    def allows(group, resource, verb):
        return any(group in r.get("apiGroups", []) and resource in r.get("resources", [])
                   and verb in r.get("verbs", []) for r in rules)

    for verb in ("get", "list", "watch"):
        assert allows("", "services", verb), verb
    assert not allows("", "services", "update")
    assert allows("", "events", "create") and allows("events.k8s.io", "events", "create")


def test_watch_namespace_scopes_interceptor_and_operator_rbac(addon_all):
    for name in ("http-add-on-interceptor", "http-add-on-rolebinding"):
        rb = find(addon_all, "RoleBinding", name)
        assert rb["metadata"]["namespace"] == "apps"
    assert not [d for d in addon_all if d["kind"] == "ClusterRoleBinding"
                and d["metadata"]["name"] in ("http-add-on-interceptor", "http-add-on-rolebinding")]


# ---------------------------------------------------------------- the hello chart

def test_hello_chart(hello_renders):
    docs = hello_renders["interceptorRoute"]
    dep = find(docs, "Deployment", "hello")
    assert "replicas" not in dep["spec"]
    pod = dep["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert (env["SHUTDOWN_DELAY_MS"], env["MAX_DELAY_MS"], env["DRAIN_TIMEOUT_MS"]) == ("2000", "30000", "30000")
    assert pod["terminationGracePeriodSeconds"] == 37  # 2 s delay + 30 s drain + 5 s
    svc = find(docs, "Service", "hello")
    assert ports(svc) == {"http": (8080, "http")}
    ir = find(docs, "InterceptorRoute", "hello")["spec"]
    assert ir["target"] == {"service": "hello", "portName": "http"}
    assert ir["rules"] == [{"hosts": ["hello.example.com"]}]
    so = find(docs, "ScaledObject", "hello")["spec"]
    assert so["minReplicaCount"] == 0
    assert so["triggers"] == [{"type": "external-push", "metadata": {
        "scalerAddress": "keda-add-ons-http-external-scaler.keda:9090", "interceptorRoute": "hello"}}]
    legacy = hello_renders["httpScaledObject"]
    assert not [d for d in legacy if d["kind"] in ("InterceptorRoute", "ScaledObject")]
    httpso = find(legacy, "HTTPScaledObject", "hello")["spec"]
    assert httpso["scaleTargetRef"]["service"] == "hello"
    assert httpso["hosts"] == ["hello.example.com"]


def test_hello_ingress_reaches_the_interceptor_proxy(hello_renders):
    docs = hello_renders["all-values"]
    alias = find(docs, "Service", "hello-proxy")["spec"]
    assert alias["type"] == "ExternalName"
    assert alias["externalName"] == "keda-add-ons-http-interceptor-proxy.addons.svc.cluster.local"
    ing = find(docs, "Ingress", "hello")["spec"]
    assert [r["host"] for r in ing["rules"]] == ["hello.example.org", "www.hello.example.org"]
    backend = ing["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "hello-proxy", "port": {"number": 8080}}
    assert not [d for d in hello_renders["interceptorRoute"] if d["kind"] == "Ingress"]
    r = helm("template", "x", str(HELLO), "--set", "ingress.enabled=true", "--set", "hosts=null", check=False)
    assert r.returncode != 0 and "needs at least one entry in hosts" in r.stderr


def test_hello_host_is_configurable():
    docs = render(HELLO, "--set", "hosts={a.example.org,b.example.org}", release="web")
    assert find(docs, "InterceptorRoute", "web")["spec"]["rules"][0]["hosts"] == ["a.example.org", "b.example.org"]


# ---------------------------------------------------------------- CI workflows

def test_workflows_are_well_formed():
    files = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "images.yml"}
    for f in files:
        wf = yaml.safe_load(f.read_text())
        on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as True
        assert on, f.name
        for job_name, job in wf["jobs"].items():
            assert "runs-on" in job, (f.name, job_name)
            assert job["steps"], (f.name, job_name)
            for step in job["steps"]:
                assert ("uses" in step) != ("run" in step), (f.name, job_name, step)


def test_no_env_var_that_nothing_reads(addon_all):
    """The official chart sets variables its binaries ignore; ours sets none of them."""
    i = env_of(container(addon_all, "keda-add-ons-http-interceptor"))
    s = env_of(container(addon_all, "keda-add-ons-http-external-scaler"))
    assert "KEDA_HTTP_CURRENT_NAMESPACE" not in i
    assert "KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT" not in s
