# syntax=docker/dockerfile:1
# ioagent for linux/amd64, linux/arm64 and linux/arm/v7 (Raspberry Pi). Nothing here is
# architecture specific: build for a Pi with
#   docker buildx build --platform linux/arm64,linux/arm/v7 -t ioagent .
# See docs/docker.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: install ioagent and its dependencies into /opt/venv ---------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler for the few dependencies that have no binary wheel on some architectures
# (armv7 mostly); it stays in this stage. Debian's versions are not pinned: the base image
# already fixes the Debian release, and pinned patch versions disappear from the mirrors.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.md ./
COPY ioagent ./ioagent
RUN /opt/venv/bin/pip install --no-cache-dir --prefer-binary /src

# --- runtime: only the venv, a non-root user and two volumes --------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# TZ only changes the local times of Python's own clock; ioagent works in UTC and takes the
# tariff's zone from [tariff] timezone (zone data comes from the tzdata package in the venv,
# and from the base image's /usr/share/zoneinfo).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TZ=Etc/UTC \
    IOAGENT_CONFIG=/config/config.toml \
    IOAGENT_STORAGE__PATH=/data/ioagent.db

# uid 1000 is the first user on Raspberry Pi OS and most desktops, so a bind-mounted config or
# secret file that only its owner can read still works.
RUN groupadd --gid 1000 ioagent \
    && useradd --uid 1000 --gid ioagent --no-create-home --home-dir /data \
       --shell /usr/sbin/nologin ioagent \
    && mkdir -p /config /data \
    && chown ioagent:ioagent /data

COPY --from=builder /opt/venv /opt/venv
COPY docker/healthcheck.py /usr/local/lib/ioagent/healthcheck.py

USER 1000:1000
WORKDIR /data
VOLUME ["/config", "/data"]

# The daemon rewrites /data/heartbeat every 15 s; older than 90 s means it is hung or gone.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/lib/ioagent/healthcheck.py", "--max-age", "90"]

ENTRYPOINT ["ioagent"]
CMD ["run"]
