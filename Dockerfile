# syntax=docker/dockerfile:1.7
# One image per process kind, all from the repository's lock files:
#   control       the API and the control-queue worker (no ML framework)
#   worker-torch  control + the "torch" toolchain environment
#   worker-onnx-tf control + the "onnx-tf" toolchain environment
#   worker-onnx2tf control + the "onnx2tf" toolchain environment (needs PYTHON=3.12:
#                  onnx2tf 2.6.9 requires Python >= 3.12; the control env runs on it too)
# Build: docker build --target worker-torch -t modelport/worker-torch .
#        docker build --build-arg PYTHON=3.12 --target worker-onnx2tf -t modelport/worker-onnx2tf .
ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS control
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MODELPORT_HOME=/opt/modelport \
    MODELPORT_DATA_DIR=/data \
    PATH=/app/.venv/bin:$PATH
WORKDIR /app
RUN apt-get update \
    && apt-get install -y --no-install-recommends util-linux curl \
    && rm -rf /var/lib/apt/lists/*
COPY locks/control.txt locks/control.txt
RUN python -m venv /app/.venv && /app/.venv/bin/pip install --no-cache-dir --no-deps -r locks/control.txt
COPY pyproject.toml README.md alembic.ini ./
COPY domain domain
COPY modelport modelport
COPY app app
COPY worker worker
COPY stages stages
COPY migrations migrations
COPY locks locks
RUN /app/.venv/bin/pip install --no-cache-dir --no-deps -e . \
    && useradd --system --uid 10001 modelport \
    && mkdir -p /data && chown modelport /data
USER modelport
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
# Open event streams last as long as their job: shutdown waits for them 5 s at most.
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "5"]

FROM control AS worker-torch
USER root
# The same builder as `make envs`, from locks/torch.txt, into $MODELPORT_HOME.
RUN python -m worker.envs build torch && rm -rf /root/.cache/pip
USER modelport
HEALTHCHECK NONE
CMD ["celery", "-A", "worker.main", "worker", "-Q", "torch", "-c", "1", \
     "--without-gossip", "--without-mingle"]

FROM control AS worker-onnx-tf
USER root
RUN python -m worker.envs build onnx-tf && rm -rf /root/.cache/pip
USER modelport
HEALTHCHECK NONE
CMD ["celery", "-A", "worker.main", "worker", "-Q", "onnx-tf", "-c", "1", \
     "--without-gossip", "--without-mingle"]

FROM control AS worker-onnx2tf
USER root
RUN python -m worker.envs build onnx2tf && rm -rf /root/.cache/pip
USER modelport
HEALTHCHECK NONE
CMD ["celery", "-A", "worker.main", "worker", "-Q", "onnx2tf", "-c", "1", \
     "--without-gossip", "--without-mingle"]
