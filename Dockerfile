# geoseg REST service: docker build -t geoseg . && docker run -p 8000:8000 -v geoseg-data:/data geoseg
FROM python:3.11-slim

# The data dir and the ONNX cache by environment (GEOSEG_SERVICE_DIR, not a --data-dir in CMD, which
# would win over an operator's variable): mount the volume elsewhere and set GEOSEG_SERVICE_DIR to it
# (and GEOSEG_CACHE to a folder on it).
# The cache on the volume: an arbitrary uid without a home (OpenShift) keeps its exported graphs.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GDAL_CACHEMAX=256 \
    GEOSEG_SERVICE_DIR=/data \
    GEOSEG_CACHE=/data/cache

WORKDIR /app

# CPU-only torch from the PyTorch index first (the PyPI default would pull CUDA, several GB);
# `pip install .` below then finds torch==2.13.0 already satisfied.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# rasterio, pyogrio and onnxruntime wheels carry their own GDAL / runtimes: no apt packages.
COPY pyproject.toml README.md LICENSE ./
COPY tiles ./tiles
COPY geoseg ./geoseg
COPY api ./api
RUN pip install . && useradd --create-home --uid 1000 --user-group geoseg && mkdir -p /data && chown 1000:1000 /data

# by number: Kubernetes' runAsNonRoot cannot verify a user name
USER 1000:1000
VOLUME ["/data"]
EXPOSE 8000

# Set GEOSEG_API_KEY at run time (docker run -e GEOSEG_API_KEY=...) to require X-API-Key on /v1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

CMD ["geoseg", "serve", "--host", "0.0.0.0", "--port", "8000"]
