# syntax=docker/dockerfile:1
#
# token-fetcher image: build with `make docker` (docker build -t token-fetcher:dev .).
#
# Run it with a config mounted at /etc/token-fetcher/config.yaml and the legacy repo
# mounted read-only where that config points, e.g.:
#
#   docker run --read-only --tmpfs /tmp -v "$PWD/my-config.yaml:/etc/token-fetcher/config.yaml:ro" \
#       -v /path/to/legacy-repo:/srv/legacy-repo:ro -p 50051:50051 -p 9464:9464 token-fetcher:dev
#
# Listening address: the server binds to what the config's `listen` says, and the
# default is 127.0.0.1 (it is a sidecar). Nothing here changes that. 127.0.0.1 is
# enough for the HEALTHCHECK below (it runs inside the container) and for a pod sidecar
# (the scheduler shares the pod's network). A published port (`docker run -p`) or a
# kubelet gRPC probe (it connects from the node to the pod IP) needs
# `listen: 0.0.0.0:50051` in the config: deploy/kubernetes/configmap.yaml sets it.

# One pinned base for both stages: the venv copied into the runtime stage points at
# this exact interpreter (/usr/local/bin/python3.11). Bump both together; add an
# @sha256 digest when your registry policy asks for one.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

# ---- builder: install the package from the source tree into a self-contained venv ----
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv

WORKDIR /src
# Only what `pip install .` needs (setup.cfg reads README.md for the long description);
# .dockerignore keeps everything else (.venv, .git, tests, state) out of the context.
COPY pyproject.toml setup.cfg README.md ./
COPY legacy_parser ./legacy_parser
COPY token_fetcher ./token_fetcher
# Not editable, so the runtime stage needs no source tree; pip byte-compiles the venv
# here, which matters because the runtime root filesystem is read-only.
RUN /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/token-fetcher --help > /dev/null

# ---- runtime: the venv and nothing else from the build ----
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="token-fetcher" \
      org.opencontainers.image.description="gRPC sidecar serving legacy Pinball workflow definitions to an Airflow migration scheduler" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can check it and the manifests
# can match it (deploy/kubernetes/deployment.yaml uses 10001 too).
ARG APP_UID=10001
ARG APP_GID=10001
RUN groupadd --system --gid "${APP_GID}" token-fetcher \
    && useradd --system --uid "${APP_UID}" --gid "${APP_GID}" --no-create-home \
        --home-dir /var/lib/token-fetcher --shell /usr/sbin/nologin token-fetcher \
    && install -d -m 0755 /etc/token-fetcher /srv/legacy-repo \
    && install -d -m 0750 -o "${APP_UID}" -g "${APP_GID}" /var/lib/token-fetcher

# bubblewrap: the parse sandbox (sandbox.isolation: strict). Unprivileged: no setuid bit,
# it needs the host to allow user namespaces (see docs/operations.md).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap=0.8.0-2+deb12u1 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /opt/venv /opt/venv

# PYTHONDONTWRITEBYTECODE: the legacy repo is mounted read-only and the root
# filesystem may be, so don't even try to write __pycache__ for definitions.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /var/lib/token-fetcher
USER ${APP_UID}:${APP_GID}

# 50051: gRPC (TokenFetcher, health, reflection). 9464: Prometheus metrics over HTTP.
EXPOSE 50051 9464

# The server handles SIGTERM itself (health turns NOT_SERVING, in-flight calls finish,
# sandbox workers exit), and the exec-form ENTRYPOINT makes it PID 1, so it gets the
# signal directly. Give it `docker stop -t` / terminationGracePeriodSeconds longer than
# the config's shutdown_grace_seconds.
STOPSIGNAL SIGTERM

# Exits 0 only when the gRPC health service says SERVING. The start period covers the
# first load of a large repo (NOT_SERVING until then), like the k8s startupProbe
# (60 x 5 s). Kubernetes ignores HEALTHCHECK and uses its native gRPC probes instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["token-fetcher", "health", "--target", "127.0.0.1:50051"]

# ENTRYPOINT + CMD together run `token-fetcher serve --config /etc/token-fetcher/config.yaml`;
# split so that `docker run IMAGE validate --config ...` runs another subcommand.
ENTRYPOINT ["token-fetcher"]
CMD ["serve", "--config", "/etc/token-fetcher/config.yaml"]
