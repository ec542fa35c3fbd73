# syntax=docker/dockerfile:1
# tunewright evaluator: the shared kernel, the evaluator service, the metrics plugin and the
# generators it answers and judges with (`local` from tunewright-trl: torch, CPU build by
# default; `openai-compatible` for a vLLM / OpenAI endpoint).
#   docker build -f docker/evaluator.Dockerfile -t tunewright/evaluator .   (from the repo root)
#   GPU generation: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements/constraints.txt requirements/dev.txt requirements/
RUN pip install --no-cache-dir "$(grep '^hatchling==' requirements/dev.txt)"
COPY libs/tunewright-core libs/tunewright-core
COPY services/evaluator services/evaluator
COPY plugins/tunewright-metrics plugins/tunewright-metrics
COPY plugins/tunewright-trl plugins/tunewright-trl
COPY plugins/tunewright-openai plugins/tunewright-openai
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels \
      ./libs/tunewright-core ./services/evaluator ./plugins/tunewright-metrics \
      ./plugins/tunewright-trl ./plugins/tunewright-openai
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
    HF_HUB_OFFLINE=1 MPLBACKEND=Agg TW_DATA_DIR=/data TW_GRPC__HOST=0.0.0.0 TW_GRPC__PORT=50054
USER tunewright
WORKDIR /data
EXPOSE 50054
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/opt/tunewright/healthcheck.py", "evaluator"]
ENTRYPOINT ["tunewright-evaluator"]
