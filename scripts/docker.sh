#!/usr/bin/env bash
# A Docker engine of the project's own: dockerd on its own unix socket, data root and exec root
# under DIR, so it shares nothing with a system Docker and is removed with DIR.
#   scripts/docker.sh start DIR   installs Debian's docker.io if dockerd is missing, starts dockerd
#                                 (idempotent) and prints the DOCKER_HOST to use
#   scripts/docker.sh stop DIR    stops it (and its containers)
#   scripts/docker.sh env DIR     prints `export DOCKER_HOST=... DOCKER_CONFIG=...` for eval
# DOCKER_CONFIG is DIR/config: the compose plugin that `make compose-plugin` builds is installed
# in DIR/config/cli-plugins, so nothing is written to ~/.docker.
set -euo pipefail
cmd=${1:?start|stop|env}; dir=${2:?dir}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
sock=$dir/docker.sock
export DOCKER_HOST=unix://$sock DOCKER_CONFIG=$dir/config

running() { [ -f "$dir/dockerd.pid" ] && kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; }

install() {
  command -v dockerd >/dev/null && command -v docker >/dev/null && return
  echo "docker.sh: installing Debian's docker.io (dockerd, containerd, runc)" >&2
  [ "$(id -u)" = 0 ] || { echo "docker.sh: dockerd is missing and installing docker.io needs root" >&2; exit 1; }
  apt-get update -qq
  # policy-rc.d keeps the package from starting a system-wide daemon: only ours runs.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null
}

case "$cmd" in
start)
  install
  mkdir -p "$DOCKER_CONFIG"
  if ! running; then
    rm -f "$sock"
    # Own socket, data root, exec root (containerd's socket and state) and pidfile; the default
    # bridge and user networks are private to this machine. overlay2 works on this kernel.
    nohup dockerd --host "unix://$sock" --data-root "$dir/data" --exec-root "$dir/exec" \
      --pidfile "$dir/dockerd.pid" --log-level warn >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 120); do
      docker version >/dev/null 2>&1 && break
      sleep 0.5
    done
  fi
  docker version >/dev/null 2>&1 || { tail -20 "$dir/dockerd.log" >&2; echo "docker.sh: dockerd did not answer on $sock" >&2; exit 1; }
  echo "$DOCKER_HOST"
  ;;
stop)
  if running; then
    pid=$(cat "$dir/dockerd.pid")
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { echo "docker.sh: dockerd $pid did not stop; killing it" >&2; kill -9 "$pid"; }
  fi
  rm -f "$dir/dockerd.pid"
  ;;
env)
  printf 'export DOCKER_HOST=%q DOCKER_CONFIG=%q\n' "$DOCKER_HOST" "$DOCKER_CONFIG"
  ;;
*) echo "usage: $0 start|stop|env DIR" >&2; exit 2 ;;
esac
