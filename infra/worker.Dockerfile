# GPU worker: long-polls the jobs queue and decodes with CTranslate2.
# Build from the repository root:  docker build -f infra/worker.Dockerfile -t headrace-worker .
# CTranslate2 4.5+ wheels need CUDA 12 and cuDNN 9 at run time; the driver comes from the host.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY headrace ./headrace
COPY handlers ./handlers
COPY worker ./worker
COPY infra ./infra
RUN pip install .

RUN useradd --system --create-home headrace \
    && mkdir -p /app/.headrace/model-cache \
    && chown -R headrace /app/.headrace
USER headrace

ENV HEADRACE_DEVICE=cuda \
    HEADRACE_MODEL_CACHE_DIR=/app/.headrace/model-cache

# ECS sends SIGTERM on stop; the worker drains in-flight jobs within StopTimeout (template.yaml).
CMD ["python", "-m", "worker"]
