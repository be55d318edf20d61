#!/usr/bin/env bash
# Chart, image and workflow checks, with tools installed by scripts/install-tools.sh:
#   helm lint (both charts, default and every-key values), helm template renders,
#   kubernetes-validate + our CRD schemas + contract tests (charts/tests, pytest),
#   hadolint on every Dockerfile.
# Ends with one line "N passed, N failed" (pytest's individual tests count one each) and exits
# non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/install-tools.sh >/dev/null || { echo "tool install failed"; echo "0 passed, 1 failed"; exit 1; }

HELM=$PWD/.tools/bin/helm
VENV=$PWD/.tools/venv
ADDON=charts/keda-add-ons-http
HELLO=charts/hello
export HELM
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

check() { # name, command...
  local name=$1
  shift
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "ok    $name"
  else
    failed=$((failed + 1))
    echo "FAIL  $name"
    sed 's/^/      /' "$log" | tail -40
  fi
}

check "helm lint $ADDON" "$HELM" lint --strict "$ADDON"
check "helm lint $ADDON (every key set)" "$HELM" lint --strict "$ADDON" -f "$ADDON/ci/all-values.yaml"
check "helm lint $HELLO" "$HELM" lint --strict "$HELLO"
check "helm lint $HELLO (httpScaledObject)" "$HELM" lint --strict "$HELLO" --set mode=httpScaledObject
check "helm lint $HELLO (every key set)" "$HELM" lint --strict "$HELLO" -f "$HELLO/ci/all-values.yaml"
check "helm template $ADDON" "$HELM" template http-add-on "$ADDON" -n keda
check "helm template $ADDON (every key set)" "$HELM" template http-add-on "$ADDON" -n keda -f "$ADDON/ci/all-values.yaml"
check "helm template $HELLO" "$HELM" template hello "$HELLO"
check "helm template $HELLO (every key set)" "$HELM" template hello "$HELLO" -f "$HELLO/ci/all-values.yaml"

for f in $(git ls-files --cached --others --exclude-standard '*Dockerfile' | sort); do
  check "hadolint $f" "$VENV/bin/hadolint" "$f"
done

# pytest: each test counts on its own in the tally.
junit=$(mktemp)
"$VENV/bin/pytest" -q -p no:cacheprovider --junitxml="$junit" charts/tests
"$VENV/bin/python" - "$junit" >"$log" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
tests, fails = int(suite.get("tests")), int(suite.get("failures")) + int(suite.get("errors"))
print(tests - fails - int(suite.get("skipped", 0)), fails)
PY
rm -f "$junit"
read -r py_pass py_fail <"$log" || { py_pass=0; py_fail=1; }
passed=$((passed + py_pass))
failed=$((failed + py_fail))

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
