#!/usr/bin/env bash
# PostgreSQL container init (for docker-entrypoint-initdb.d, or by hand as an administrator):
# applies roles.sql to $POSTGRES_DB and sets each role's password from the environment. psql
# reads the password itself (\getenv), so it is never part of a file or a command line. A role
# whose variable is unset gets no password (it cannot log in with password authentication).
#   SLUICE_ROLES_SQL  the roles script (default: roles.sql next to this script)
set -euo pipefail
roles=${SLUICE_ROLES_SQL:-$(cd "$(dirname "$0")" && pwd)/roles.sql}
psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}")
"${psql[@]}" -f "$roles"
for pair in loader:SLUICE_PG_LOADER_PASSWORD partitioner:SLUICE_PG_PARTITIONER_PASSWORD \
            dbt:SLUICE_PG_DBT_PASSWORD reader:SLUICE_PG_READER_PASSWORD; do
  role=sluice_${pair%%:*}; var=${pair#*:}
  [ -n "${!var:-}" ] || continue
  "${psql[@]}" <<SQL
\\getenv pw $var
SELECT format('ALTER ROLE %I PASSWORD %L', '$role', :'pw') \\gexec
SQL
done
