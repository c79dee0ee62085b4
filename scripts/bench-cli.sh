#!/usr/bin/env bash
# The bulk inventory operations through the real CLI (create -f, list, update, delete) on SQLite
# and a throw-away PostgreSQL, this build side by side with a baseline build in the same run, so
# the figures are ratios measured together on a shared machine; then each server's memory a
# minute after the rounds.
# Arguments: [NODES (100000)] [ROUNDS (3)] [BASELINE (98ed810: before the issue-13 work)].
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=${1:-100000}
rounds=${2:-3}
baseline=${3:-98ed810}

. scripts/lib.sh
bash scripts/install-deps.sh
ensure_postgres

cargo build --release -p xcat3-server -p xcat3-cli -p xcat3-tests --bins
# The baseline: its own checkout and target directory, built once per commit.
src=target/bench-baseline/src
if [ "$(git -C "$src" rev-parse HEAD 2>/dev/null || true)" != "$(git rev-parse "$baseline^{commit}")" ]; then
  rm -rf "$src"
  git worktree prune
  git worktree add --detach "$src" "$baseline"
fi
(cd "$src" && CARGO_TARGET_DIR=$PWD/../target cargo build --release -p xcat3-server -p xcat3-cli)
XCAT3_BENCH_BASELINE=$PWD/target/bench-baseline/target/release \
  target/release/xcat3-bench cli "$nodes" "$rounds"
