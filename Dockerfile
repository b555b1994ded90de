# The operator's image. `make e2e-kind` builds it; the Helm chart runs it.
#   docker build -t ghcr.io/mlops/modelrollout-operator:dev .
#
# Reproducible: the base image is pinned by digest, and every Python package comes
# from requirements/*.lock (hack/lock.sh, from pyproject.toml), checked by hash and
# taken as a wheel only, so nothing is compiled. The image runs the operator and the
# shadow comparator (`modelrollout-shadow`, the chart's shadowComparator), so
# operator.lock holds the dependencies and the `shadow` extra. Two stages: the first
# builds a virtualenv, the second, with no build tools at all, gets only that
# virtualenv.
#
# The base image: python:3.11-slim (Python 3.11.16) by the multi-platform index digest
# that public builds resolved that tag to in 2026 (found in their build logs; no image
# can be pulled where this file was written). To move it on, put the tag's current
# digest in the ARG below (both stages use it):
#   docker buildx imagetools inspect python:3.11-slim --format '{{.Manifest.Digest}}'
# (or `crane digest python:3.11-slim`, `skopeo inspect docker://python:3.11-slim`).
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# Two virtualenvs: /opt/modelrollout is what ships; /opt/build holds setuptools only
# long enough to build the operator's wheel.
RUN python -m venv /opt/modelrollout && python -m venv /opt/build
COPY requirements/ /src/requirements/
RUN /opt/modelrollout/bin/pip install --require-hashes --only-binary=:all: --no-deps \
        -r /src/requirements/operator.lock \
 && /opt/build/bin/pip install --require-hashes --only-binary=:all: --no-deps \
        -r /src/requirements/build.lock
COPY pyproject.toml README.md /src/
COPY operator /src/operator
# --no-deps: the dependencies are the locked ones above, nothing else may come in.
# Then both entry points must import: a dependency missing from the lock fails here.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheel /src \
 && /opt/modelrollout/bin/pip install --no-deps /tmp/wheel/*.whl \
 && /opt/modelrollout/bin/python -c "import modelrollout.__main__, modelrollout.shadow.main" \
 && /opt/modelrollout/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/modelrollout/bin:$PATH
COPY --from=build /opt/modelrollout /opt/modelrollout
# Numeric, so that runAsNonRoot can verify it; the chart mounts /tmp (read-only root).
USER 10001:10001
WORKDIR /
ENTRYPOINT ["python", "-m", "modelrollout"]
