# syntax=docker/dockerfile:1
# tunewright trainer (GPU): the shared kernel, the trainer service, the TRL methods and base
# models (torch CUDA build, transformers, peft, trl, accelerate, bitsandbytes for QLoRA) and the
# MLflow / TensorBoard trackers, on NVIDIA's CUDA base image (Ubuntu 24.04, Python 3.12). The
# torch wheels carry cuBLAS, cuDNN and NCCL; the host needs the NVIDIA driver and the NVIDIA
# Container Toolkit (compose/gpu.yml reserves the GPUs).
#   docker build -f docker/trainer.Dockerfile -t tunewright/trainer .   (from the repo root)
#   DeepSpeed ZeRO (trainer.launch.strategy deepspeed-zero2/3) compiles its ops at run time:
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu24.04 --build-arg EXTRA_PIP=deepspeed==<version>
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG EXTRA_PIP=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements/constraints.txt requirements/dev.txt requirements/
# a build venv for the pinned build backend; the runtime venv gets only what runs
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir "$(grep '^hatchling==' requirements/dev.txt)"
COPY libs/tunewright-core libs/tunewright-core
COPY services/trainer services/trainer
COPY plugins/tunewright-trl plugins/tunewright-trl
COPY plugins/tunewright-mlflow plugins/tunewright-mlflow
COPY plugins/tunewright-tensorboard plugins/tunewright-tensorboard
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels \
      ./libs/tunewright-core ./services/trainer ./plugins/tunewright-trl \
      ./plugins/tunewright-mlflow ./plugins/tunewright-tensorboard
# torch first, the CUDA build, pinned: the rest must not pull another build
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" \
      "$(grep '^torch==' requirements/constraints.txt)" \
 && /opt/venv/bin/pip install --no-cache-dir -c requirements/constraints.txt /wheels/*.whl $EXTRA_PIP

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tunewright \
 && useradd --system --uid 10001 --gid tunewright --home-dir /data --shell /usr/sbin/nologin tunewright \
 && mkdir -p /data /artifacts && chown tunewright:tunewright /data /artifacts
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/tunewright/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 TW_DATA_DIR=/data TW_GRPC__HOST=0.0.0.0 TW_GRPC__PORT=50053
USER tunewright
WORKDIR /data
EXPOSE 50053
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/opt/tunewright/healthcheck.py", "trainer"]
ENTRYPOINT ["tunewright-trainer"]
