#!/usr/bin/env bash
# Builds in release and runs xcat3-bench on SQLite and on a throw-away PostgreSQL.
# Arguments: [NODES (10000)] [ROUNDS (3)].
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
if [ -z "${XCAT3_TEST_POSTGRES_URL:-}" ]; then
  eval "$(bash scripts/postgres.sh)"
  trap 'bash scripts/postgres.sh stop "$XCAT3_TEST_POSTGRES_DIR"' EXIT
fi
export XCAT3_TEST_POSTGRES_URL
cargo build --release --workspace --bins
target/release/xcat3-bench "$@"
