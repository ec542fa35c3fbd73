# syntax=docker/dockerfile:1
# tunewright registry: the shared kernel and the registry service, nothing else (no torch, no
# plugins; SQLite by default, PostgreSQL by TW_REGISTRY__DATABASE_URL).
#   docker build -f docker/registry.Dockerfile -t tunewright/registry .   (from the repo root)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements/constraints.txt requirements/dev.txt requirements/
# wheels of this repo's distributions, built offline by the pinned build backend
RUN pip install --no-cache-dir "$(grep '^hatchling==' requirements/dev.txt)"
COPY libs/tunewright-core libs/tunewright-core
COPY services/registry services/registry
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels \
      ./libs/tunewright-core ./services/registry
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c requirements/constraints.txt /wheels/*.whl

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 tunewright \
 && useradd --system --uid 10001 --gid tunewright --home-dir /data --shell /usr/sbin/nologin tunewright \
 && mkdir -p /data /artifacts && chown tunewright:tunewright /data /artifacts
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/tunewright/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    TW_DATA_DIR=/data TW_GRPC__HOST=0.0.0.0 TW_GRPC__PORT=50055
USER tunewright
WORKDIR /data
EXPOSE 50055
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/opt/tunewright/healthcheck.py", "registry"]
ENTRYPOINT ["tunewright-registry"]
