#!/usr/bin/env bash
# Runs every test: installs what is missing (Debian packages), starts a throw-away PostgreSQL
# unless XCAT3_TEST_POSTGRES_URL is already set, builds the binaries the end-to-end tests start,
# and runs the whole workspace's tests (unit tests and end-to-end tests on SQLite and PostgreSQL).
# Extra arguments go to `cargo test` (for example a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
if [ -z "${XCAT3_TEST_POSTGRES_URL:-}" ]; then
  eval "$(bash scripts/postgres.sh)"
  trap 'bash scripts/postgres.sh stop "$XCAT3_TEST_POSTGRES_DIR"' EXIT
fi
export XCAT3_TEST_POSTGRES_URL

cargo build --workspace --bins
cargo test --workspace "$@"
