# The operator's image. `make e2e-kind` builds it; the Helm chart runs it.
#   docker build -t ghcr.io/mlops/modelrollout-operator:dev .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install . && rm -rf /src

# Numeric, so that runAsNonRoot can verify it; the chart mounts /tmp (read-only root).
USER 10001:10001
WORKDIR /
ENTRYPOINT ["python", "-m", "modelrollout"]
