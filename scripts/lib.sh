# Shell helpers shared by scripts/*.sh (sourced, not run).

# Starts a throw-away PostgreSQL unless XCAT3_TEST_POSTGRES_URL is set, exports its URL and stops
# it when the calling script exits.
ensure_postgres() {
  if [ -z "${XCAT3_TEST_POSTGRES_URL:-}" ]; then
    eval "$(bash scripts/postgres.sh)"
    trap 'bash scripts/postgres.sh stop "$XCAT3_TEST_POSTGRES_DIR"' EXIT
  fi
  export XCAT3_TEST_POSTGRES_URL
}

# Starts libvirtd in a network namespace unless XCAT3_TEST_LIBVIRT_DIR is set, and stops it when
# the calling script exits (together with PostgreSQL, if ensure_postgres started it).
ensure_libvirt() {
  if [ -z "${XCAT3_TEST_LIBVIRT_DIR:-}" ]; then
    eval "$(bash scripts/libvirt.sh)"
    local pg_stop=""
    [ -n "${XCAT3_TEST_POSTGRES_DIR:-}" ] && pg_stop="bash scripts/postgres.sh stop $XCAT3_TEST_POSTGRES_DIR;"
    trap "$pg_stop bash scripts/libvirt.sh stop $XCAT3_TEST_LIBVIRT_DIR" EXIT
  fi
  export XCAT3_TEST_LIBVIRT_DIR
}
