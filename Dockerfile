# syntax=docker/dockerfile:1
# The spacesecrets operator image: `docker build -t spacesecrets .`
# The chart runs it as `spacesecrets operator`, non-root, on a read-only root filesystem.

FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# dependencies first (pinned in pyproject.toml), so a code change does not reinstall them
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY operator/ operator/
RUN pip install --no-deps . \
 && python -m compileall -q /opt/venv \
 && spacesecrets --help >/dev/null

FROM python:3.11-slim
LABEL org.opencontainers.image.title="spacesecrets" \
      org.opencontainers.image.description="Owner-managed, versioned, encrypted secrets per namespace" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
COPY --from=builder /opt/venv /opt/venv
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["spacesecrets"]
CMD ["operator"]
