#!/usr/bin/env bash
# Fuzzes the network agent's packet handling (DHCP, DNS, TFTP requests) with cargo fuzz (libFuzzer).
#   bash scripts/fuzz.sh [SECONDS]     default 60
# cargo-fuzz needs nightly features; on a stable toolchain RUSTC_BOOTSTRAP=1 enables them.
set -euo pipefail
cd "$(dirname "$0")/../services/network"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
cargo fuzz run packets -- -max_total_time="${1:-60}" -max_len=1500
