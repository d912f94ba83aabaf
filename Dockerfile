# streamfold plus one topology, for helm/streamfold:
#   docker build --build-arg TOPOLOGY=retail -t registry.example.com/retail:1.0 .
# The topology's code is copied into the image, not mounted: the image is then the one
# versioned unit that a rollout (and a rollback) moves, the code that runs is the code that
# was built and reviewed with its checked-in schemas, and a package with modules and
# dependencies needs no ConfigMap (1 MiB, flat) or volume to arrive before the process starts.
# The chart mounts only what describes the deployment: each worker group's topology file
# and each sink's connector spec.

# Build: the platform and its dependencies into a virtualenv (all of them ship wheels: no compiler needed).
FROM python:3.12.8-slim-bookworm@sha256:2199a62885a12290dc9c5be3ca0681d367576ab7bf037da120e564723292a2f0 AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/streamfold
WORKDIR /src
COPY pyproject.toml README.md ./
COPY platform/ platform/
RUN /opt/streamfold/bin/pip install --no-cache-dir .

# Run: the virtualenv and the topology's package, as an unprivileged user.
FROM python:3.12.8-slim-bookworm@sha256:2199a62885a12290dc9c5be3ca0681d367576ab7bf037da120e564723292a2f0
ARG TOPOLOGY=retail
ENV PATH=/opt/streamfold/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAMFOLD_LOG_FORMAT=json
RUN groupadd --system --gid 10001 streamfold \
    && useradd --system --uid 10001 --gid streamfold --home-dir /app --no-create-home streamfold
COPY --from=build /opt/streamfold /opt/streamfold
WORKDIR /app
COPY topologies/__init__.py topologies/
COPY topologies/${TOPOLOGY}/ topologies/${TOPOLOGY}/
USER 10001:10001
ENTRYPOINT ["streamfold"]
CMD ["--help"]
