# Local stand-in for python:3.11-slim-bookworm (the dbt runner's base): Debian's python3.11 on the
# debootstrap base. Built by scripts/images.sh, only where no image registry is reachable.
ARG DEBIAN_IMAGE=sluice-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
CMD ["python3"]
