# Local stand-in for versity/versitygw: versitygw built from its Go module (static, CGO_ENABLED=0)
# on scratch, run as a numeric non-root user, plus sluice-healthcheck for its /health probe. The
# build context is the directory scripts/images.sh fills with the binaries.
FROM scratch
COPY versitygw sluice-healthcheck /usr/local/bin/
COPY --chown=65532:65532 empty/ /data/
USER 65532:65532
EXPOSE 7070
ENTRYPOINT ["/usr/local/bin/versitygw"]
