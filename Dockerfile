# syntax=docker/dockerfile:1
# The spacesecrets operator image, for users with Docker: `docker build -t spacesecrets .`
#
# The same image as `make image` (hack/image/build.sh operator, which needs no Docker): the same
# scripts build a Debian bookworm root filesystem with mmdebstrap from the pinned packages in
# hack/image/operator/packages (every package checked against hack/image/operator/debian.lock),
# add the Python packages of hack/image/operator/requirements.txt (hashes checked) and a wheel of
# this tree, and a passwd entry for uid 65532 (nonroot). The run-time config below is
# hack/image/operator/image.json's. The chart runs it as `spacesecrets operator`, uid 65532, on a
# read-only root filesystem.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      mmdebstrap=1.3.5-7 python3-pip=23.0.1+dfsg-1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY hack/image/ hack/image/
RUN hack/image/rootfs.sh operator /rootfs \
 && hack/image/build.sh python-deps /rootfs
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN hack/image/build.sh python-app /rootfs /src

FROM scratch
COPY --from=build /rootfs/ /
USER 65532:65532
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    USER=nonroot \
    HOME=/home/nonroot \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /
EXPOSE 8080 8081
LABEL org.opencontainers.image.title="spacesecrets" \
      org.opencontainers.image.description="Owner-managed, versioned, encrypted secrets per namespace" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["spacesecrets"]
CMD ["operator"]
