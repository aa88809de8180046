# The mbot container image, built by goreleaser (.goreleaser.yaml dockers_v2)
# from the static linux binaries it has just built: the build context holds
# linux/amd64/mbot and linux/arm64/mbot.
#
# distroless/static: CA certificates, /etc/passwd with user nonroot, tzdata,
# no shell and no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
ARG TARGETPLATFORM
COPY $TARGETPLATFORM/mbot /usr/local/bin/mbot
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/mbot"]
CMD ["--help"]
