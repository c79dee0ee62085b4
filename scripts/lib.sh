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
