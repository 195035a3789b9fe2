# The service image: FastAPI wrapper (service/app) run by uvicorn as a non-root user, from a venv.
#
# Works with the classic builder as well as BuildKit (no RUN --mount), so it builds on the testbed's
# Debian docker.io and on GitHub's runners alike:
#   GitHub:  docker build --build-arg APP_VERSION=sha-abc1234 --build-arg VCS_REF=<sha> .
#   testbed: scripts/build-push.sh (BASE_IMAGE made by debootstrap, BUILD_BASE_IMAGE = it + binutils,
#            WHEELHOUSE=.testbed/wheelhouse; built with --network none)
# Build arguments:
#   BASE_IMAGE   any Debian-like image with python3 + venv (default python:3.12-slim)
#   BUILD_BASE_IMAGE  the build stage's image (default BASE_IMAGE). If it has binutils, the build needs no network
#                with a wheelhouse (the testbed's: BASE_IMAGE + binutils); otherwise apt-get installs them.
#   WHEELHOUSE   context-relative directory of wheels. If it holds any *.whl, pip installs from it only
#                (--no-index); the default docker/wheels is empty, so pip uses PyPI.
#   PIP_INDEX_URL  another package index than PyPI (a mirror) when there is no wheelhouse; no credentials in it
#                (build arguments show in the build stage's history)
#   APP_VERSION  the release tag (sha-<hash>); baked in as APP_VERSION, shown by /health and the OCI label
#   VCS_REF, SOURCE_URL   OCI labels: the git commit and the repository
ARG BASE_IMAGE=python:3.12-slim
ARG BUILD_BASE_IMAGE=${BASE_IMAGE}

# ---- build: resolve requirements.txt into /opt/venv (pip and binutils live only in this stage)
FROM ${BUILD_BASE_IMAGE} AS build
ARG WHEELHOUSE=docker/wheels
# binutils (strip, readelf) for slim-venv.sh, unless the image has them. Its own layer before the requirements,
# so rebuilds reuse it.
# hadolint ignore=DL3008
RUN command -v strip > /dev/null || { \
        apt-get update \
        && apt-get install -y --no-install-recommends binutils \
        && rm -rf /var/lib/apt/lists/*; \
    }
WORKDIR /build
COPY requirements.txt docker/slim-venv.sh ./
COPY ${WHEELHOUSE}/ /wheels/
# Declared here, after the binutils layer, so that a different index does not invalidate it; pip reads it itself.
ARG PIP_INDEX_URL
# pip is removed from the venv afterwards: the runtime never installs anything. slim-venv.sh drops the debug info
# some wheels ship (~20 MB) and checks that every compiled module still imports.
RUN python3 -m venv /opt/venv \
    && if [ -n "$(find /wheels -name '*.whl' -print -quit)" ]; then set -- --no-index --find-links /wheels; fi \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check "$@" -r requirements.txt \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools \
    && sh ./slim-venv.sh /opt/venv

# ---- runtime
FROM ${BASE_IMAGE}
ARG APP_VERSION=dev
ARG VCS_REF=unknown
# A placeholder: GitHub's build sets the label from the repository (docker/metadata-action), build-push.sh from
# the git remote when it is a GitHub URL.
ARG SOURCE_URL=https://github.com/local-llm-server/local-llm-server
LABEL org.opencontainers.image.title="local-llm-server" \
      org.opencontainers.image.description="FastAPI gateway in front of a host-local Ollama" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.version="${APP_VERSION}"

# A fixed numeric uid, so `runAsNonRoot`-style checks and file ownership are predictable. -l: no lastlog entry
# (a high uid would otherwise make a large sparse file).
RUN useradd --no-log-init --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app

COPY --from=build /opt/venv /opt/venv
COPY service/app /app/service/app
# Compiled once here: the app user cannot write __pycache__ next to root-owned sources, and start-up is faster.
RUN /opt/venv/bin/python -m compileall -q /app/service/app

# FORWARDED_ALLOW_IPS: peers whose X-Forwarded-For/-Proto uvicorn's --proxy-headers believes. cloudflared (and an
# SSH tunnel) reach the container through the published loopback port, so the peer is the Docker bridge gateway
# (172.16.0.0/12 on Linux, 192.168.65.0/24 on Docker Desktop) or loopback; nothing else can reach it. Same list
# as the service's TRUSTED_PROXIES default (service/app/config.py).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_VERSION=${APP_VERSION} \
    FORWARDED_ALLOW_IPS=127.0.0.0/8,::1/128,172.16.0.0/12,192.168.65.0/24
WORKDIR /app/service
USER 10001:10001
EXPOSE 8080

# Standard library only (no curl in the image); -I -S keeps the probe's start-up cheap. Compose files set a
# shorter interval; this default suits a plain `docker run`.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-I", "-S", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080, timeout=2); c.request('GET', '/health'); raise SystemExit(c.getresponse().status != 200)"]

CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8080", "--proxy-headers", "--no-server-header"]
