#!/usr/bin/env bash
# Prepares what a make target needs, all parts at once, one line per part with its time:
#   scripts/prepare.sh [--timings FILE] [--pg DIR] PART...
# Parts:
#   sluice     .sluice/bin/sluice                 (the demo runs only this binary)
#   versitygw  .sluice/bin/versitygw              (the local S3 server: tools/versitygw)
#   services   .sluice/bin/sluice-<service>, one per services/*/cmd (make build)
#   dbt        .venv with dbt, pinned, from wheels only
# The Go parts are one lane: the modules they import are downloaded first, then every binary is
# built by one `go build`, so packages they share (the AWS SDK, the standard library) compile
# once. The dbt virtualenv and, with --pg, a throwaway PostgreSQL cluster (scripts/pg.sh) are
# other lanes. Every sluice binary is built with -tags grpcnotrace (see GO_TAGS below). A part
# that is up to date costs a second or two (Go's build cache; the
# virtualenv's stamp). --timings appends "<part><TAB><seconds>" lines to FILE.
# Output of each part goes to .sluice/logs/<part>.log, shown when a part fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=.sluice/bin
logs=.sluice/logs
timings=/dev/null pgdir=
while [ $# -gt 0 ]; do
  case "$1" in
    --timings) timings=$2; shift 2;;
    --pg) pgdir=$2; shift 2;;
    *) break;;
  esac
done
mkdir -p "$bin" "$logs"

pkgs=()
want_dbt=
for part in "$@"; do
  case "$part" in
    sluice) pkgs+=(./cmd/sluice);;
    versitygw) pkgs+=(./tools/versitygw);;
    services) for d in services/*/cmd/sluice-*; do pkgs+=("./$d"); done;;
    dbt) want_dbt=1;;
    *) echo "prepare: unknown part $part (sluice, versitygw, services, dbt)" >&2; exit 2;;
  esac
done

# grpcnotrace keeps gRPC (linked by the OTLP trace exporters) from importing golang.org/x/net/trace
# and with it html/template, whose reflection makes the linker keep every exported method of
# every type: the fetcher is 29 MB with it, 46 MB without. The Dockerfile and scripts/images.sh
# build with the same tag.
GO_TAGS=grpcnotrace

# go_lane downloads the modules the packages import, then builds them in one invocation.
go_lane() {
  part "Go modules" go list -tags "$GO_TAGS" -deps "${pkgs[@]}"
  local what="${pkgs[*]##*/}"
  [ ${#pkgs[@]} -le 3 ] || what="${#pkgs[@]} binaries"
  part "Go build ($what)" go build -tags "$GO_TAGS" -o "$bin/" "${pkgs[@]}"
}

# dbt_venv creates .venv from the pinned requirements, wheels only (no compiler, nothing built
# from source), through pip's cache: a second clone on the same machine downloads nothing. The
# stamp holds the requirements' hash, so an edit of requirements.txt makes a fresh virtualenv.
dbt_venv() {
  local req=dbt_project/requirements.txt stamp=.venv/.requirements.sha256 want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ -x .venv/bin/dbt ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    part "dbt virtualenv (up to date)" true
    return
  fi
  # The machine's pip installs into the virtualenv (--python, pip 22.3+) when it can: creating
  # the virtualenv without a pip of its own saves ensurepip's install (about 4 of 18 CPU s).
  local venv=(python3 -m venv --clear) pip=(.venv/bin/pip)
  if python3 -m pip --version 2>/dev/null | awk '{split($2, v, "."); exit !(v[1] > 22 || (v[1] == 22 && v[2] >= 3))}'; then
    venv+=(--without-pip) pip=(python3 -m pip --python .venv/bin/python)
  fi
  part "dbt virtualenv" bash -c "${venv[*]} .venv && ${pip[*]} install --quiet --disable-pip-version-check --only-binary=:all: --no-deps -r $req && echo $want > $stamp"
}

pg_start() { part "PostgreSQL" scripts/pg.sh start "$pgdir"; }

# part NAME CMD...: runs CMD with its output in the part's log; prints NAME and its time.
part() {
  local name=$1; shift
  local log="$logs/$(printf '%s' "$name" | tr -c 'a-zA-Z0-9' '-' | sed 's/-*$//').log"
  local t0=$EPOCHREALTIME rc=0
  "$@" >"$log" 2>&1 || rc=$?
  local secs
  secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
  if [ $rc -ne 0 ]; then
    printf '  %-44s failed after %ss; the end of %s:\n' "$name" "$secs" "$log" >&2
    tail -n 30 "$log" >&2
    return $rc
  fi
  printf '  %-44s %6ss\n' "$name" "$secs"
  printf '%s\t%s\n' "$name" "$secs" >>"$timings"
}

t0=$EPOCHREALTIME
pids=()
[ ${#pkgs[@]} -gt 0 ] && { go_lane & pids+=($!); }
[ -n "$want_dbt" ] && { dbt_venv & pids+=($!); }
[ -n "$pgdir" ] && { pg_start & pids+=($!); }
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
[ $rc -eq 0 ] || { echo "prepare: a part failed (logs in $logs)" >&2; exit 1; }
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
printf '%s\t%s\n' "prepared (all parts at once)" "$secs" >>"$timings"
