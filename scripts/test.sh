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

cargo build --workspace --bins
# The container images the container tests run (runtime stages from these debug binaries, and
# the etcd, PostgreSQL and BMC simulator images beside them).
bash scripts/images.sh debug --test
cargo test --workspace "$@"
