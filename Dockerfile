# The mmsearch API (CPU). Build: docker build -t mmsearch . ; run via compose.yaml.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    MMSEARCH_CACHE_DIR=/data/cache \
    HF_HOME=/data/huggingface

WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
# Exactly the locked versions (hashes checked). The lock's torch is the CPU build, served by the PyTorch CPU index.
RUN pip install --require-hashes --no-deps --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock
COPY src ./src
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 mmsearch \
    && mkdir -p /data && chown mmsearch /data

USER mmsearch
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=5)"
CMD ["mmsearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
