#!/usr/bin/env bash
# Throwaway servers for running sluice yourself (README, "Running it yourself"):
#   scripts/dev-env.sh start   starts PostgreSQL, the S3 server and the sample source under
#                              .sluice/dev (or finds them running) and prints, on stdout and
#                              nothing else, the exports sluice.yaml needs: eval "$(make -s dev-env)"
#   scripts/dev-env.sh stop    stops them (make dev-env-stop; make clean does it too)
# The sample source serves the demo's orders at http://127.0.0.1:18081, sluice.yaml's source.url.
set -euo pipefail
cmd=${1:?start|stop}
root=$(cd "$(dirname "$0")/.." && pwd)
dev=$root/.sluice/dev
bin=$root/.sluice/bin
source_addr=127.0.0.1:18081
export SLUICE_S3_ACCESS_KEY=${SLUICE_S3_ACCESS_KEY:-sluice-local}
export SLUICE_S3_SECRET_KEY=${SLUICE_S3_SECRET_KEY:-sluice-local-secret}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

case "$cmd" in
start)
  mkdir -p "$dev"
  {
    db=$("$root/scripts/pg.sh" start "$dev/pg")
    s3=$("$root/scripts/s3.sh" start "$dev/s3")
    if ! running "$dev/source.pid"; then
      nohup "$bin/sluice" sample-source --addr "$source_addr" --rows 1000 --delay 3s >"$dev/source.log" 2>&1 &
      echo $! > "$dev/source.pid"
      for _ in $(seq 1 50); do curl -fs -o /dev/null "http://$source_addr/healthz" && break; sleep 0.1; done
      curl -fs -o /dev/null "http://$source_addr/healthz" || { cat "$dev/source.log"; exit 1; }
      # The answer above may come from another process on that port: this one must be alive.
      sleep 0.3
      running "$dev/source.pid" || { echo "the sample source cannot listen on $source_addr:"; cat "$dev/source.log"; exit 1; }
    fi
  } >&2
  cat <<EOF
export DATABASE_URL='$db'
export SLUICE_S3_ENDPOINT='$s3'
export SLUICE_S3_ACCESS_KEY='$SLUICE_S3_ACCESS_KEY'
export SLUICE_S3_SECRET_KEY='$SLUICE_S3_SECRET_KEY'
# PostgreSQL, S3 (versitygw) and the sample source (http://$source_addr) run under .sluice/dev;
# make dev-env-stop stops them.
EOF
  ;;
stop)
  if running "$dev/source.pid"; then kill "$(cat "$dev/source.pid")"; fi
  rm -f "$dev/source.pid"
  if [ -d "$dev/s3" ]; then "$root/scripts/s3.sh" stop "$dev/s3"; fi
  if [ -d "$dev/pg" ]; then "$root/scripts/pg.sh" stop "$dev/pg"; fi
  ;;
*) echo "usage: $0 start|stop" >&2; exit 2;;
esac
