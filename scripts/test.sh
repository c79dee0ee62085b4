#!/usr/bin/env bash
# Runs every test: installs what is missing (Debian packages), starts a throw-away PostgreSQL
# unless XCAT3_TEST_POSTGRES_URL is already set, builds the binaries the end-to-end tests start,
# and runs the whole workspace's tests (unit tests and end-to-end tests on SQLite and PostgreSQL).
# Extra arguments go to `cargo test` (for example a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
bash scripts/install-deps.sh
ensure_postgres
ensure_libvirt
export XCAT3_TEST_GRPCURL=$PWD/target/test-tools/venv/bin/grpcurl
export XCAT3_TEST_SUSHY=$PWD/target/test-tools/venv/bin/sushy-emulator
export XCAT3_TEST_HELM=$PWD/target/test-tools/k8s/helm
export XCAT3_TEST_KUBE_VALIDATE=$PWD/target/test-tools/venv/bin/kubernetes-validate
export XCAT3_TEST_PAYLOADS=$PWD/target/test-tools/payloads

# The container images the container tests run: the Debian base and the etcd and PostgreSQL
# images (debootstrap and apt: network-bound) are made while cargo builds; then the runtime stages
# from these debug binaries and the BMC simulator image.
mkdir -p target
bash scripts/images.sh base --test >target/images-base.log 2>&1 &
images_base=$!
cargo build --workspace --bins
wait "$images_base" || { cat target/images-base.log; echo "scripts/images.sh base failed" >&2; exit 1; }
bash scripts/images.sh debug --test
cargo test --workspace "$@"
