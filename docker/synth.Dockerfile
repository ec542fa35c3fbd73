# syntax=docker/dockerfile:1
# tunewright synth: the shared kernel, the synth service (MinHash and MiniLM embeddings for
# near-duplicates), the generators it drafts with (`local` from tunewright-trl: torch, CPU build
# by default; `openai-compatible` for a vLLM / OpenAI endpoint) and the feedback backends
# (simulated annotator, Argilla).
#   docker build -f docker/synth.Dockerfile -t tunewright/synth .   (from the repo root)
#   GPU generation: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements/constraints.txt requirements/dev.txt requirements/
RUN pip install --no-cache-dir "$(grep '^hatchling==' requirements/dev.txt)"
COPY libs/tunewright-core libs/tunewright-core
COPY services/synth services/synth
COPY plugins/tunewright-trl plugins/tunewright-trl
COPY plugins/tunewright-feedback plugins/tunewright-feedback
COPY plugins/tunewright-argilla plugins/tunewright-argilla
COPY plugins/tunewright-openai plugins/tunewright-openai
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels \
      ./libs/tunewright-core ./services/synth ./plugins/tunewright-trl \
      ./plugins/tunewright-feedback ./plugins/tunewright-argilla ./plugins/tunewright-openai
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
    HF_HUB_OFFLINE=1 TW_DATA_DIR=/data TW_GRPC__HOST=0.0.0.0 TW_GRPC__PORT=50052
USER tunewright
WORKDIR /data
EXPOSE 50052
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/opt/tunewright/healthcheck.py", "synth"]
ENTRYPOINT ["tunewright-synth"]
