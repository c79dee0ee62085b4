#!/usr/bin/env bash
# Writes deploy/compose/.env (mode 0600) with a random admin token, agent token and PostgreSQL
# password for compose.yaml, unless it exists. Docker Compose reads it from the compose file's
# directory; variables set in the environment win over it.
set -euo pipefail
cd "$(dirname "$0")"
if [ -e .env ]; then
  echo "deploy/compose/.env exists: keeping it"
  exit 0
fi
random() { head -c 32 /dev/urandom | base64 | tr -d '/+=' | cut -c1-40; }
umask 077
cat >.env <<ENV
XCAT3_ADMIN_TOKEN=$(random)
XCAT3_AGENT_TOKEN=$(random)
POSTGRES_PASSWORD=$(random)
ENV
echo "wrote deploy/compose/.env (the admin token is XCAT3_ADMIN_TOKEN there)"
