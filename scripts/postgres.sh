#!/usr/bin/env bash
# Starts a throw-away PostgreSQL on 127.0.0.1 (a free port), data in a temporary directory, and
# prints `export XCAT3_TEST_POSTGRES_URL=...` and `export XCAT3_TEST_POSTGRES_DIR=...`.
# `scripts/postgres.sh stop DIR` stops it and removes the directory.
# As root, the server runs as the 'postgres' user (initdb refuses root).
set -euo pipefail

BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$BIN" ] || { echo "PostgreSQL is not installed (scripts/install-deps.sh installs it)" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

if [ "${1:-}" = stop ]; then
  D=$2
  as_pg "$BIN/pg_ctl -D $D/data -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$D"
  exit 0
fi

D=$(mktemp -d /tmp/xcat3-pg-XXXXXX)
chmod 755 "$D"
[ "$(id -u)" -eq 0 ] && chown postgres: "$D"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$BIN/initdb -D $D/data -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >$D/initdb.log 2>&1"
as_pg "$BIN/pg_ctl -D $D/data -l $D/server.log -w -t 60 -o \"-c listen_addresses=127.0.0.1 -p $PORT -k $D -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400\" start" >/dev/null
echo "export XCAT3_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
echo "export XCAT3_TEST_POSTGRES_DIR=$D"
