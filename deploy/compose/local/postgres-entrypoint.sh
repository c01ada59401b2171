#!/bin/bash
# Entrypoint of the local PostgreSQL stand-in (postgres.Dockerfile): the official image's contract
# for what sluice's compose file uses. On a new data directory: initdb with POSTGRES_USER and its
# password, create POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sql (psql) and *.sh (run if
# executable, else sourced, as the official image does), then serve on all interfaces with
# password authentication.
set -eu
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) must be set}"
  pw=$(mktemp); printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
  initdb -D "$PGDATA" -U "$user" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "$db" != postgres ]; then psql -v ON_ERROR_STOP=1 -U "$user" -d postgres -c "CREATE DATABASE \"$db\"" >/dev/null; fi
  export PGUSER="$user" PGDATABASE="$db"
  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    echo "docker-entrypoint.sh: running $f"
    case "$f" in
      *.sql) psql -v ON_ERROR_STOP=1 -q -f "$f" ;;
      *.sh) if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
    esac
  done
  unset PGUSER PGDATABASE
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "docker-entrypoint.sh: PostgreSQL init process complete; ready for start up."
fi
if [ "${1:-}" = postgres ]; then
  shift
  exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"
