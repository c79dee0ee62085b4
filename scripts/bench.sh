#!/usr/bin/env bash
# Builds in release and runs xcat3-bench: the inventory figures on SQLite and a throw-away
# PostgreSQL, then power status through four conductors (etcd) on simulated Redfish BMCs.
# Arguments: [NODES (10000)] [ROUNDS (3)].
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
bash scripts/install-deps.sh
ensure_postgres

cargo build --release --workspace --bins
target/release/xcat3-bench inventory "$@"
target/release/xcat3-bench power "$@"
