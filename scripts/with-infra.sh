#!/usr/bin/env bash
# Runs a command with the real servers the tests need: a throwaway PostgreSQL cluster and a
# versitygw S3 server under DIR, stopped again when the command ends.
#   scripts/with-infra.sh DIR CMD [ARGS...]
set -euo pipefail
dir=${1:?dir}; shift
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
export SLUICE_S3_ACCESS_KEY=${SLUICE_S3_ACCESS_KEY:-sluice-local}
export SLUICE_S3_SECRET_KEY=${SLUICE_S3_SECRET_KEY:-sluice-local-secret}
# The PostgreSQL cluster is removed, not only stopped (it lives in DIR/pg, pg.sh), and
# a test run leaves nothing behind in the temporary directory.
stop() { "$root/scripts/s3.sh" stop "$dir/s3" || true; "$root/scripts/pg.sh" remove "$dir/pg" || true; }
trap stop EXIT
SLUICE_TEST_DATABASE_URL=$("$root/scripts/pg.sh" start "$dir/pg")
SLUICE_TEST_S3_ENDPOINT=$("$root/scripts/s3.sh" start "$dir/s3")
export SLUICE_TEST_DATABASE_URL SLUICE_TEST_S3_ENDPOINT
export SLUICE_TEST_DBT=${SLUICE_TEST_DBT:-$root/.venv/bin/dbt}
export SLUICE_ROOT=$root
"$@"
