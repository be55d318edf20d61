# Sourced by the measurement scripts that run an interceptor binary in files mode (no
# Kubernetes). files_mode_setup HELLO_BIN DEFAULT_PORT_BASE [cold] sets $backend, $proxy,
# $admin and $metrics (PORT_BASE=P, else the default: P..P+3 on 127.0.0.1), makes $dir (removed
# on exit, together with every background job), starts the hello backend on $backend and
# writes $dir/routes.json and $dir/endpoints.json: host app.example.com to the backend and,
# with "cold", cold.example.com to a target without endpoints (its requests are held).
files_mode_setup() {
  local hello=$1 default_base=$2 cold=${3:-}
  local base=${PORT_BASE:-$default_base}
  backend=$base proxy=$((base + 1)) admin=$((base + 2)) metrics=$((base + 3))
  dir=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
  PORT=$backend BIND_ADDRESS=127.0.0.1 "$hello" >/dev/null 2>&1 &
  local route='{"apiVersion":"http.keda.sh/v1beta1","kind":"InterceptorRoute","metadata":{"namespace":"bench","name":"NAME"},
  "spec":{"target":{"service":"NAME","port":8080},"rules":[{"hosts":["NAME.example.com"]}],
          "scalingMetric":{"concurrency":{"targetValue":100}}}}'
  local routes=${route//NAME/app}
  local endpoints="\"bench/app/8080\":{\"addresses\":[\"127.0.0.1:$backend\"]}"
  if [ "$cold" = cold ]; then
    routes="$routes,${route//NAME/cold}"
    endpoints="$endpoints,\"bench/cold/8080\":{\"addresses\":[]}"
  fi
  echo "[$routes]" > "$dir/routes.json"
  echo "{$endpoints}" > "$dir/endpoints.json"
}
