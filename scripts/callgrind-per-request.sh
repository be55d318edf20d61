#!/usr/bin/env bash
# Instructions per proxied request under callgrind, for one or more interceptor binaries
# against the same hello backend (one keep-alive connection, files mode, no Kubernetes).
# Counts instructions, not time, so it is repeatable on a busy machine. Startup cost cancels
# out: each binary runs twice (200 and 1200 requests) and the difference is divided by 1000.
#   usage: scripts/callgrind-per-request.sh HELLO_BIN INTERCEPTOR_BIN [INTERCEPTOR_BIN ...]
#   e.g.:  cargo build --release -p keda-http-interceptor -p hello &&
#          scripts/callgrind-per-request.sh target/release/hello target/release/keda-http-interceptor
# Needs valgrind, curl and python3. Ports 18080-18083 on 127.0.0.1 (PORT_BASE=N: N..N+3,
# so that two measurements on one machine never send requests to each other's proxy).
# With CALLGRIND_KEEP=DIR the callgrind output files are kept in DIR (cg.BIN.N, for
# callgrind_annotate; the difference of the two runs is the per-request profile).
set -euo pipefail
hello=$1; shift
# shellcheck source=scripts/files-mode.sh
. "$(dirname "$0")/files-mode.sh"
files_mode_setup "$hello" 18080
run() { # BIN N -> total instructions
  local bin=$1 n=$2 out=$dir/cg.$RANDOM
  KEDA_HTTP_ROUTES_FILE=$dir/routes.json KEDA_HTTP_ENDPOINTS_FILE=$dir/endpoints.json \
  KEDA_HTTP_PROXY_PORT=$proxy KEDA_HTTP_ADMIN_PORT=$admin OTEL_PROM_EXPORTER_PORT=$metrics \
  KEDA_HTTP_SHUTDOWN_DELAY=0s RUST_LOG=error \
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" >/dev/null 2>"$out.log" &
  local pid=$!
  for _ in $(seq 1 120); do
    curl -s -o /dev/null -H 'Host: app.example.com' 127.0.0.1:$proxy/ && break
    sleep 0.5
  done
  python3 - "$n" "$proxy" <<'P'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[2]))
for _ in range(int(sys.argv[1])):
    c.request("GET", "/", headers={"Host": "app.example.com"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
P
  kill -TERM "$pid"; wait "$pid" || true
  if [ -n "${CALLGRIND_KEEP:-}" ]; then
    mkdir -p "$CALLGRIND_KEEP" && cp "$out" "$CALLGRIND_KEEP/cg.$(basename "$bin").$n"
  fi
  grep -o "Collected : [0-9]*" "$out.log" | awk '{print $3}'
}
for bin in "$@"; do
  a=$(run "$bin" 200); b=$(run "$bin" 1200)
  echo "$bin: $(( (b - a) / 1000 )) instructions per request"
done
