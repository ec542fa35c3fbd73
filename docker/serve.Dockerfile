# syntax=docker/dockerfile:1
# tunewright serve: the shared kernel, the serve service (gRPC ServeService and the
# OpenAI-compatible HTTP API: FastAPI, uvicorn) and its default backend `transformers` from
# tunewright-trl (torch, CPU build by default; transformers, peft). torch is imported on the
# first request, not at start-up.
#   docker build -f docker/serve.Dockerfile -t tunewright/serve .   (from the repo root)
#   GPU serving: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (gpu.yml does)
# The HTTP API listens on 0.0.0.0 in the container, so the settings want a bearer token
# (TW_SERVE__HTTP__API_KEY) and TLS (TW_SERVE__HTTP__TLS_CERT_FILE / _KEY_FILE): compose
# passes both (compose/setup.sh makes them).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements/constraints.txt requirements/dev.txt requirements/
RUN pip install --no-cache-dir "$(grep '^hatchling==' requirements/dev.txt)"
COPY libs/tunewright-core libs/tunewright-core
COPY services/serve services/serve
COPY plugins/tunewright-trl plugins/tunewright-trl
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels \
      ./libs/tunewright-core ./services/serve ./plugins/tunewright-trl
# torch first, from the chosen index and pinned: the rest must not pull another build
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" \
      "$(grep '^torch==' requirements/constraints.txt)" \
 && /opt/venv/bin/pip install --no-cache-dir -c requirements/constraints.txt /wheels/*.whl

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 tunewright \
 && useradd --system --uid 10001 --gid tunewright --home-dir /data --shell /usr/sbin/nologin tunewright \
 && mkdir -p /data /artifacts && chown tunewright:tunewright /data /artifacts
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/tunewright/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 TW_DATA_DIR=/data TW_GRPC__HOST=0.0.0.0 TW_GRPC__PORT=50057 \
    TW_SERVE__HTTP__HOST=0.0.0.0 TW_SERVE__HTTP__PORT=8000
USER tunewright
WORKDIR /data
# gRPC (ServeService, health), then the OpenAI-compatible HTTP API
EXPOSE 50057 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/opt/tunewright/healthcheck.py", "serve"]
ENTRYPOINT ["tunewright-serve"]
