# Every sluice image, built from the repository root with the program as a build argument and the
# image's kind as the target:
#   docker build --build-arg SERVICE=fetcher --target service -t sluice/fetcher .
#       SERVICE: sensor, fetcher, validator, partitioner or alerter
#   docker build --build-arg SERVICE=console --target console -t sluice/console .
#   docker build --build-arg SERVICE=dbtrunner --target dbtrunner -t sluice/dbtrunner .
#   docker build --build-arg SERVICE=sluice --target cli -t sluice/sluice .     (the command line)
# Always name the target: the classic builder (scripts/images.sh) builds every stage before it.
# A Go service is a static binary on scratch: no shell, no package manager, CA certificates, a
# numeric non-root user, sluice-healthcheck as the container healthcheck (GET /readyz). The dbt
# runner is the one image with a shell: dbt is Python, so its runtime is a Python base with dbt
# pinned by dbt_project/requirements.txt in /opt/dbt and the project in /opt/sluice/dbt_project.
ARG GO_IMAGE=golang:1.26-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY . .
# SERVICE names the program: a service of services/ or sluice (the command line). PREBUILT: a
# directory of the build context holding the static binaries, built with the same flags on the
# host (`make images` does: there the Go module and build caches are warm and no image registry
# is reachable); empty compiles them here (grpcnotrace: see scripts/prepare.sh). WHEELS: a
# directory of the build context holding every wheel of dbt_project/requirements.txt (`make
# images` fills it with `pip wheel` on the host); empty installs from the package index.
ARG SERVICE=
ARG PREBUILT=
ARG WHEELS=
RUN set -eu; \
    case "$SERVICE" in \
      sluice) bin=sluice pkg=./cmd/sluice;; \
      sensor|fetcher|validator|partitioner|dbtrunner|alerter|console) bin=sluice-$SERVICE pkg=./services/$SERVICE/cmd/sluice-$SERVICE;; \
      *) echo "--build-arg SERVICE= names the program: sluice or a service of services/ (got '$SERVICE')" >&2; exit 2;; \
    esac; \
    mkdir -p /out/bin /out/wheels; \
    if [ -n "$WHEELS" ]; then cp "$WHEELS"/*.whl /out/wheels/; fi; \
    if [ -n "$PREBUILT" ]; then cp "$PREBUILT/$bin" "$PREBUILT/sluice-healthcheck" /out/bin/; \
    else export CGO_ENABLED=0; \
      go build -tags grpcnotrace -trimpath -ldflags='-s -w' -o "/out/bin/$bin" "$pkg"; \
      go build -tags grpcnotrace -trimpath -ldflags='-s -w' -o /out/bin/sluice-healthcheck ./cmd/sluice/internal/healthcheck; fi; \
    ln -s "$bin" /out/bin/sluice-service

# A Go service: its binary, under its own name and as sluice-service, the entrypoint.
FROM scratch AS service
ARG SERVICE=
ARG VERSION=dev
ARG REVISION=
LABEL org.opencontainers.image.title="sluice-${SERVICE}" \
      org.opencontainers.image.description="sluice's ${SERVICE} service (services/${SERVICE}/README.md)" \
      org.opencontainers.image.source="https://github.com/sluice-etl/sluice" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/bin/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=4s --retries=12 CMD ["/usr/local/bin/sluice-healthcheck"]
ENTRYPOINT ["/usr/local/bin/sluice-service"]
CMD ["--config", "/etc/sluice/sluice.yaml", "--http", ":8080"]

# The console: a service that also serves its pages on :8090 (--addr).
FROM service AS console
EXPOSE 8090
CMD ["--config", "/etc/sluice/sluice.yaml", "--addr", ":8090", "--http", ":8080"]

# The command line (provision, trigger, backfill, status, pause, sample-source, ...);
# sluice-healthcheck is there for long-running commands (sample-source).
FROM scratch AS cli
ARG VERSION=dev
ARG REVISION=
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="sluice's command line: provision, trigger, backfill, status, sample-source" \
      org.opencontainers.image.source="https://github.com/sluice-etl/sluice" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# All of /out/bin, not named files: the classic builder builds this stage for the dbtrunner target
# too, whose build stage holds sluice-dbtrunner, not sluice.
COPY --from=build /out/bin/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sluice"]

FROM ${PYTHON_IMAGE} AS dbt
COPY dbt_project/requirements.txt /tmp/requirements.txt
COPY --from=build /out/wheels/ /tmp/wheels/
RUN set -eu; python3 -m venv /opt/dbt; \
    if ls /tmp/wheels/*.whl >/dev/null 2>&1; then from="--no-index --find-links /tmp/wheels"; else from=; fi; \
    /opt/dbt/bin/pip install --no-cache-dir --disable-pip-version-check $from -r /tmp/requirements.txt; \
    /opt/dbt/bin/dbt --version

# The dbt runner: the service on a Python base with dbt. The warm dbt worker
# (services/dbtrunner/worker.py) is embedded in sluice-dbtrunner and runs under
# /opt/dbt/bin/python3, the interpreter /opt/dbt/bin/dbt names; it needs a writable /tmp (its
# target dir) and about 150-300 MB of memory beside the Go process (dbt.worker.max_rss_mb bounds it).
FROM ${PYTHON_IMAGE} AS dbtrunner
ARG VERSION=dev
ARG REVISION=
LABEL org.opencontainers.image.title="sluice-dbtrunner" \
      org.opencontainers.image.description="sluice's dbt runner: dbt build of the day's partition into the target table" \
      org.opencontainers.image.source="https://github.com/sluice-etl/sluice" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=dbt /opt/dbt /opt/dbt
COPY dbt_project /opt/sluice/dbt_project
COPY --from=build /out/bin/sluice-dbtrunner /out/bin/sluice-healthcheck /usr/local/bin/
ENV HOME=/tmp DBT_SEND_ANONYMOUS_USAGE_STATS=false
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=4s --retries=12 CMD ["/usr/local/bin/sluice-healthcheck"]
ENTRYPOINT ["/usr/local/bin/sluice-dbtrunner"]
CMD ["--config", "/etc/sluice/sluice.yaml", "--http", ":8080"]
