# pixelbatch image: one image for every role of the distributed mode.
#   API (default CMD):  pixelbatch serve --host 0.0.0.0 --port 8000
#   worker:             pixelbatch worker [--concurrency N]
#   migrations:         pixelbatch db upgrade
#   Flower:             celery --app pixelbatch.jobs.celery_app:app flower --port=5555
#
# Build: docker build -t pixelbatch:local .
# See deploy/README.md for docker compose and Kubernetes.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
# Builder: compilers and headers live here only, for any dependency that has
# no wheel for this platform. Everything is installed into /opt/venv, which is
# the only thing the final stage takes.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the build needs (see .dockerignore): metadata, readme, sources.
COPY pyproject.toml README.md ./
COPY src ./src
# A regular (non-editable) install: the venv does not reference /src afterwards.
RUN pip install --upgrade pip \
    && pip install ".[flower]"

# ---------------------------------------------------------------------------
# Runtime: the slim base plus the venv. No compilers, no apt packages, no curl.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# A fixed, non-root uid/gid (10001) so Kubernetes can check runAsNonRoot and
# volume ownership (fsGroup) matches across images.
RUN groupadd --system --gid 10001 pixelbatch \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /app --shell /usr/sbin/nologin pixelbatch \
    && mkdir -p /app /data \
    && chown pixelbatch:pixelbatch /app /data

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIXELBATCH_DATA_DIR=/data

WORKDIR /app
USER 10001:10001

# Uploaded CSVs, outputs (file:///data/outputs) and, in embedded mode, SQLite.
# In the distributed mode the API and every worker must mount the SAME volume
# here: workers write outputs, the API serves them at /files/...
# Declared after the chown so a fresh named volume starts owned by uid 10001.
VOLUME ["/data"]

EXPOSE 8000

# Liveness of the API process. slim has no curl: use the interpreter.
# Roles that serve no HTTP (worker, migrate) disable it (see docker-compose.yml);
# Kubernetes ignores it and uses the probes in deploy/k8s/.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["pixelbatch", "serve", "--host", "0.0.0.0", "--port", "8000"]
