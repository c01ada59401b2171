#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL 15 cluster from the machine's initdb/pg_ctl.
#   scripts/pg.sh start DIR   -> prints the database URL (also written to DIR/url)
#   scripts/pg.sh stop DIR
#   scripts/pg.sh remove DIR   stops it and deletes its data, wherever it lives (make clean)
# The cluster listens on 127.0.0.1 on a free port; trust auth, so no password exists to leak.
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?data dir}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
bindir=$(dirname "$(readlink -f "$(command -v pg_ctl || echo /usr/lib/postgresql/15/bin/pg_ctl)")")
as_pg() {
  # initdb refuses to run as root: run the cluster as the postgres user then.
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
# As root the cluster runs as postgres, which may not be able to enter DIR (a checkout under a
# private 0700 directory), so it then lives in a directory of its own under /tmp.
pgdir=$dir
if [ "$(id -u)" = 0 ]; then
  pgdir=/tmp/sluice-pg-$(printf '%s' "$dir" | md5sum | cut -c1-12)
  mkdir -p "$pgdir" && chown postgres "$pgdir" && chmod 700 "$pgdir"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
case "$cmd" in
start)
  if [ -f "$dir/url" ] && as_pg "$bindir/pg_ctl" -D "$pgdir/data" status >/dev/null 2>&1; then cat "$dir/url"; exit 0; fi
  if [ ! -f "$pgdir/data/PG_VERSION" ]; then
    as_pg "$bindir/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  port=$(free_port)
  as_pg "$bindir/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 60 \
    -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null \
    || { cat "$pgdir/server.log" >&2; exit 1; }
  url="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
  echo "$url" > "$dir/url"; echo "$url"
  ;;
stop)
  [ -d "$pgdir/data" ] && as_pg "$bindir/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -f "$dir/url"
  ;;
remove)
  [ -d "$pgdir/data" ] && as_pg "$bindir/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$pgdir" "$dir"
  ;;
*) echo "usage: $0 start|stop|remove DIR" >&2; exit 2;;
esac
