# The mmsearch API (CPU). Build: docker build -t mmsearch . ; run via compose.yaml.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    MMSEARCH_CACHE_DIR=/data/cache \
    HF_HOME=/data/huggingface

# The CPU build of torch first: an unpinned torch from PyPI would pull several GB of CUDA wheels.
RUN pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . \
    && useradd --create-home --uid 10001 mmsearch \
    && mkdir -p /data && chown mmsearch /data

USER mmsearch
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=5)"
CMD ["mmsearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
