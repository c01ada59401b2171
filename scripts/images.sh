#!/usr/bin/env bash
# Builds sluice's images, and the local stand-ins of the compose stack's other images, on a machine
# that reaches package registries but no image registry (`make images`):
#   - the base: Debian bookworm made by debootstrap and imported (sluice-local/debian), cached as a
#     tarball in .sluice/images/cache so a fresh Docker data root imports it instead;
#   - the stand-ins for python, postgres and prometheus (Debian packages on that base, cached
#     likewise with `docker save`) and for nats and versitygw (their Go modules, static, on scratch);
#   - the sluice images from the real Dockerfile (one target per kind of image), with the static binaries built here on the
#     host (PREBUILT: same flags, warm Go caches) and dbt's wheels built here (WHEELS);
# then prints every image's size. Needs DOCKER_HOST (scripts/docker.sh start).
#   scripts/images.sh            everything
#   SLUICE_TAG=dev               the sluice images' tag
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tag=${SLUICE_TAG:-dev}
work=$root/.sluice/images
bin=$work/bin           # sluice's binaries, in the build context (.dockerignore lets them in)
standin=$work/standin   # nats-server and versitygw, the stand-ins' context
cache=$work/cache
mkdir -p "$bin" "$standin/empty" "$cache"
export DOCKER_BUILDKIT=0 # the classic builder: no buildx here, and it needs no image registry
NATS_VERSION=$(cd pkg && go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
VERSITYGW_VERSION=$(cd tools/versitygw && go list -m -f "{{.Version}}" github.com/versity/versitygw)
SERVICES=(sensor fetcher validator partitioner dbtrunner alerter console)
log() { printf '%s images: %s\n' "$(date +%T)" "$*" >&2; }

have() { docker image inspect "$1" >/dev/null 2>&1; }

# hash FILE...: a short content hash naming a cached image
hash() { cat "$@" | sha256sum | cut -c1-12; }

# Debian bookworm minbase with CA certificates, from the same Debian mirror as the host's apt.
debian() {
  local img=sluice-local/debian:bookworm tar=$cache/debian-bookworm.tar
  have "$img" && return
  if [ ! -s "$tar" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    local mirror rootfs=$work/rootfs
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
    log "debootstrap bookworm (minbase) from the host's Debian mirror"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
      { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    # The host's sources (bookworm, -updates, -security) so packages match the host's versions.
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
      cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/" && rm -f "$rootfs/etc/apt/sources.list"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tar.tmp" . && sha256sum < "$tar.tmp" > "$tar.sha256" && mv "$tar.tmp" "$tar"
    rm -rf "$rootfs"
  fi
  log "import $img"
  docker import -c 'CMD ["bash"]' "$tar" "$img" >/dev/null
}

# standin NAME TAG DOCKERFILE CONTEXT [INPUT...]: build a stand-in image once, keep it as a saved
# tarball keyed by its Dockerfile and inputs, and load that tarball into a fresh data root.
standin() {
  local name=$1 img=$2 df=$3 ctx=$4; shift 4
  local h; h=$(hash "$df" "$@" "$cache/debian-bookworm.tar.sha256") # a new base rebuilds them
  local tar=$cache/$name-$h.tar
  if have "$img" && [ "$(docker image inspect -f '{{index .Config.Labels "sluice.local.hash"}}' "$img")" = "$h" ]; then return; fi
  if [ -s "$tar" ]; then
    log "load $img"
    docker load -i "$tar" >/dev/null
    return
  fi
  log "build $img"
  docker build -q --label "sluice.local.hash=$h" -t "$img" -f "$df" "$ctx" >/dev/null
  rm -f "$cache/$name"-*.tar
  docker save -o "$tar.tmp" "$img" && mv "$tar.tmp" "$tar"
}

# gobuild OUT DIR PKG: a static, stripped binary with the flags the Dockerfile uses (grpcnotrace:
# see scripts/prepare.sh)
gobuild() { (cd "$2" && CGO_ENABLED=0 go build -tags grpcnotrace -trimpath -ldflags='-s -w' -o "$1" "$3"); }

log "static binaries (host Go $(go env GOVERSION))"
gobuild "$bin/sluice" cmd/sluice .
gobuild "$bin/sluice-healthcheck" cmd/sluice ./internal/healthcheck
for s in "${SERVICES[@]}"; do gobuild "$bin/sluice-$s" "services/$s" "./cmd/sluice-$s"; done
cp "$bin/sluice-healthcheck" "$standin/"
for m in "github.com/nats-io/nats-server/v2@$NATS_VERSION nats-server" "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION versitygw"; do
  set -- $m
  stamp=$standin/$2.version
  if [ ! -x "$standin/$2" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$1" ]; then
    log "go install $1 (static)"
    CGO_ENABLED=0 GOBIN=$standin GOFLAGS= go install -trimpath -ldflags='-s -w' "$1"
    echo "$1" > "$stamp"
  fi
done

reqs=dbt_project/requirements.txt wheels=$work/wheels
if [ "$(cat "$wheels/.requirements" 2>/dev/null)" != "$(sha256sum < "$reqs")" ]; then
  log "dbt's wheels (pip wheel on the host)"
  rm -rf "$wheels" && mkdir -p "$wheels"
  python3 -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$wheels" -r "$reqs"
  sha256sum < "$reqs" > "$wheels/.requirements"
fi

debian
local_dir=deploy/compose/local
standin python sluice-local/python:3.11-bookworm $local_dir/python.Dockerfile $local_dir
standin postgres sluice-local/postgres:15-bookworm $local_dir/postgres.Dockerfile $local_dir $local_dir/postgres-entrypoint.sh
standin prometheus sluice-local/prometheus:bookworm $local_dir/prometheus.Dockerfile $local_dir
log "build sluice-local/nats:$NATS_VERSION, sluice-local/versitygw:$VERSITYGW_VERSION"
docker build -q -t "sluice-local/nats:$NATS_VERSION" -f $local_dir/nats.Dockerfile "$standin" >/dev/null
docker build -q -t "sluice-local/versitygw:$VERSITYGW_VERSION" -f $local_dir/versitygw.Dockerfile "$standin" >/dev/null

revision=$(git rev-parse HEAD 2>/dev/null || true)
build() { # build IMAGE TARGET SERVICE [ARGS...]: from the one Dockerfile
  local img=$1 target=$2 service=$3; shift 3
  log "build $img (Dockerfile, target $target)"
  docker build -q -t "$img" --target "$target" --build-arg SERVICE="$service" --build-arg GO_IMAGE=sluice-local/debian:bookworm \
    --build-arg PREBUILT=.sluice/images/bin --build-arg VERSION="$tag" --build-arg REVISION="$revision" "$@" . >/dev/null
}
build "sluice/sluice:$tag" cli sluice
for s in "${SERVICES[@]}"; do
  case "$s" in
    dbtrunner) build "sluice/$s:$tag" dbtrunner "$s" --build-arg PYTHON_IMAGE=sluice-local/python:3.11-bookworm \
      --build-arg WHEELS=.sluice/images/wheels;;
    console) build "sluice/$s:$tag" console "$s";;
    *) build "sluice/$s:$tag" service "$s";;
  esac
done
docker image ls --format 'table {{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E '^(REPOSITORY|sluice)'
