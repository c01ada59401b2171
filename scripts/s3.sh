#!/usr/bin/env bash
# Starts or stops a local S3-compatible server (versitygw, posix backend) on 127.0.0.1.
#   scripts/s3.sh start DIR   -> prints the endpoint URL (also written to DIR/endpoint)
#   scripts/s3.sh stop DIR
# Credentials come from SLUICE_S3_ACCESS_KEY / SLUICE_S3_SECRET_KEY (local throwaway values
# set by the Makefile); the server binary is versitygw built with only its posix backend
# (tools/versitygw; `scripts/prepare.sh versitygw`, which `make tools` and `make demo` run).
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?data dir}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${VERSITYGW:-$root/.sluice/bin/versitygw}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
case "$cmd" in
start)
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then cat "$dir/endpoint"; exit 0; fi
  [ -x "$bin" ] || { echo "versitygw not found at $bin: run 'make tools' (or scripts/prepare.sh versitygw)" >&2; exit 1; }
  : "${SLUICE_S3_ACCESS_KEY:?}" "${SLUICE_S3_SECRET_KEY:?}"
  mkdir -p "$dir/data"
  port=$(free_port)
  ROOT_ACCESS_KEY="$SLUICE_S3_ACCESS_KEY" ROOT_SECRET_KEY="$SLUICE_S3_SECRET_KEY" \
    nohup "$bin" --port "127.0.0.1:$port" posix "$dir/data" >"$dir/server.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then break; fi
    sleep 0.1
  done
  curl -s -o /dev/null "http://127.0.0.1:$port/" || { cat "$dir/server.log" >&2; exit 1; }
  echo "http://127.0.0.1:$port" | tee "$dir/endpoint"
  ;;
stop)
  if [ -f "$dir/pid" ]; then kill "$(cat "$dir/pid")" 2>/dev/null || true; rm -f "$dir/pid"; fi
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2;;
esac
