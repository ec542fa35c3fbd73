# syntax=docker/dockerfile:1
# tunewright monitor: the shared kernel, the monitor service and the drift detectors
# (tunewright-drift with its default `hashing` embedder: scikit-learn, no torch).
#   docker build -f docker/monitor.Dockerfile -t tunewright/monitor .   (from the repo root)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements/constraints.txt requirements/dev.txt requirements/
# wheels of this repo's distributions, built offline by the pinned build backend
RUN pip install --no-cache-dir "$(grep '^hatchling==' requirements/dev.txt)"
COPY libs/tunewright-core libs/tunewright-core
COPY services/monitor services/monitor
COPY plugins/tunewright-drift plugins/tunewright-drift
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels \
      ./libs/tunewright-core ./services/monitor ./plugins/tunewright-drift
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c requirements/constraints.txt /wheels/*.whl

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 tunewright \
 && useradd --system --uid 10001 --gid tunewright --home-dir /data --shell /usr/sbin/nologin tunewright \
 && mkdir -p /data /artifacts && chown tunewright:tunewright /data /artifacts
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/tunewright/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    TW_DATA_DIR=/data TW_GRPC__HOST=0.0.0.0 TW_GRPC__PORT=50056
USER tunewright
WORKDIR /data
EXPOSE 50056
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/opt/tunewright/healthcheck.py", "monitor"]
ENTRYPOINT ["tunewright-monitor"]
