#!/usr/bin/env bash
# Builds xcat3 (release) and starts the whole system on this machine: `xcat3-server all-in-one`
# with SQLite under the data directory (default /var/lib/xcat3 as root), no etcd.
# Extra arguments go to the server (see `xcat3-server all-in-one --help`), for example
#   bash scripts/start.sh --listen 0.0.0.0:3010 --data-dir /srv/xcat3
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --build-only
cargo build --release -p xcat3-server -p xcat3-cli
cat >&2 <<MSG
xcat3 built. The client is target/release/xcat3. Once the server is up:
  export XCAT3_URL=http://127.0.0.1:3010 XCAT3_TOKEN=\$(cat <data dir>/admin.token)
  target/release/xcat3 network-create c920 subnet=11.0.0.0 netmask=255.0.0.0 ...
MSG
exec target/release/xcat3-server all-in-one "$@"
