#!/usr/bin/env bash
# Memory per client connection of an interceptor binary (files mode, no Kubernetes), from
# VmRSS in /proc/PID/status; a measurement, not a pass/fail test. Three runs, each a fresh
# interceptor that has first answered a few requests on one connection (so the upstream pool
# and the allocator's working set are warm):
#   open: N keep-alive connections opened, no request sent;
#   idle: N keep-alive connections, each answered once, then left open and idle;
#   held: N requests held for a cold start (a route whose target has no endpoint).
# Prints KiB per connection (RSS after minus before, over N) for each.
#   usage: scripts/rss-per-connection.sh HELLO_BIN INTERCEPTOR_BIN [N]   (N defaults to 2000)
#   e.g.:  cargo build --release -p keda-http-interceptor -p hello &&
#          scripts/rss-per-connection.sh target/release/hello target/release/keda-http-interceptor
# MODES="idle held" runs only those measurements.
# Needs python3 and curl; ports 18090-18093 on 127.0.0.1 (PORT_BASE=P: P..P+3); N + 1000
# open files.
set -euo pipefail
hello=$1
bin=$2
n=${3:-2000}
ulimit -n $((n + 1000))
# shellcheck source=scripts/files-mode.sh
. "$(dirname "$0")/files-mode.sh"
files_mode_setup "$hello" 18090 cold
measure() { # MODE -> KiB per connection
  local mode=$1
  KEDA_HTTP_ROUTES_FILE=$dir/routes.json KEDA_HTTP_ENDPOINTS_FILE=$dir/endpoints.json \
  KEDA_HTTP_PROXY_PORT=$proxy KEDA_HTTP_ADMIN_PORT=$admin OTEL_PROM_EXPORTER_PORT=$metrics \
  KEDA_HTTP_READINESS_TIMEOUT=600s KEDA_HTTP_REQUEST_TIMEOUT=600s \
  KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS=0 KEDA_HTTP_SHUTDOWN_DELAY=0s \
  KEDA_HTTP_DRAIN_TIMEOUT=1s RUST_LOG=error "$bin" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    curl -s -o /dev/null -H 'Host: app.example.com' 127.0.0.1:$proxy/ && break
    sleep 0.2
  done
  python3 - "$mode" "$n" "$pid" "$proxy" <<'P'
import socket, sys, time
mode, n, pid, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def request(host):
    return f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rss-probe\r\nAccept: */*\r\n\r\n".encode()
def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "connection closed before a response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:40]
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += s.recv(65536)
warm = socket.create_connection(("127.0.0.1", port))
for _ in range(50):
    warm.sendall(request("app.example.com")); read_response(warm)
time.sleep(0.5)
before = rss_kib()
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if mode == "idle":
        s.sendall(request("app.example.com")); read_response(s)
    elif mode == "held":
        s.sendall(request("cold.example.com"))
    conns.append(s)
time.sleep(2)
after = rss_kib()
answered = 0
for s in conns:
    s.setblocking(False)
    try:
        s.recv(1)
        answered += 1
    except BlockingIOError:
        pass
note = f", {answered} already answered or closed" if answered else ""
print(f"{mode}: {(after - before) / n:.1f} KiB per connection ({n} connections, RSS {before} -> {after} KiB{note})")
for s in conns:
    s.close()
P
  kill -TERM "$pid"; wait "$pid" || true
}
for mode in ${MODES:-open idle held}; do measure "$mode"; done
