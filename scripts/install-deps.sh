#!/usr/bin/env bash
# Installs what building and testing xcat3 needs on Debian 12, from Debian's packages only:
#   protobuf-compiler (+ libprotobuf-dev for the well-known types): protoc for our protos and etcd-client
#   postgresql: the test suite runs against a throw-away PostgreSQL as well as SQLite
# Idempotent; uses sudo when not root. Prints nothing when everything is present.
set -euo pipefail

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler libprotobuf-dev)
[ -e /usr/include/google/protobuf/timestamp.proto ] || need+=(libprotobuf-dev)
if [ "${1:-}" != "--build-only" ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v psql >/dev/null || need+=(postgresql-client)
fi
[ ${#need[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps apt from starting the packaged PostgreSQL service on machines with systemd.
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

command -v cargo >/dev/null || { echo "cargo is missing: install Rust 1.94 or newer (https://rustup.rs)" >&2; exit 1; }
