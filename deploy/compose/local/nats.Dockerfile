# Local stand-in for the official nats image: nats-server built from its Go module (static,
# CGO_ENABLED=0) on scratch, run as a numeric non-root user, plus sluice-healthcheck for the
# /healthz probe. The build context is the directory scripts/images.sh fills with the binaries.
FROM scratch
COPY nats-server sluice-healthcheck /usr/local/bin/
COPY --chown=65532:65532 empty/ /data/
USER 65532:65532
EXPOSE 4222 8222
ENTRYPOINT ["/usr/local/bin/nats-server"]
