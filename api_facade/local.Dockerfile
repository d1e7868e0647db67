# The REST facade in local mode (docker-compose.yml): the job image, which holds the pipeline,
# with the facade's package and its `api` extra added. The job image itself carries no facade.
# Build context: the repository root; the job image must exist (`make images`, or
# `docker compose build cli`).
#
#   docker build -f api_facade/local.Dockerfile --build-arg JOB_IMAGE=audioproc-job:0.1.0 \
#     -t audioproc-local:0.1.0 .

ARG JOB_IMAGE=audioproc-job:0.1.0
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.5.31
# Pin by digest where you build: ghcr.io/astral-sh/uv:0.5.31@sha256:<digest>

FROM ${UV_IMAGE} AS uv

# hadolint ignore=DL3006
FROM ${JOB_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The job image runs as 10001 with a read-only venv; the install runs as root.
USER 0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY job_image/audioproc job_image/audioproc
COPY api_facade/audioproc_api api_facade/audioproc_api
# One layer on the job image: installed in place (copying the venv from a build stage would
# duplicate torch's gigabytes in a new layer). uv is mounted for this step only; its cache lives in a BuildKit cache mount. Behind a
# TLS-intercepting proxy, pass its CA as the build secret ca_bundle. Our own wheel is
# rebuilt without the cache (see job_image/Dockerfile).
RUN --mount=from=uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi \
 && export VIRTUAL_ENV=/opt/venv UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never \
 && uv pip install -r pyproject.toml --extra=api \
 && uv pip install --no-cache --no-deps . \
 && rm -rf /src
LABEL org.opencontainers.image.title="audioproc-local" \
      org.opencontainers.image.description="AudioProcessor REST facade in local mode (pipeline included)"
WORKDIR /work
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["audioproc-api", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
