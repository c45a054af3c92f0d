# ru-rlhf in a container: the whole loop on CPU, offline at run time (docs/reproduction.md).
#
# Not built in CI here: the CI machine has no Docker daemon, so this file is written from the
# Makefile's install steps and checked by reading, not by a build. Build and run it yourself:
#
#   docker build -t ru-rlhf .
#   docker run --rm -v "$PWD/data:/app/data" ru-rlhf                        # kedro run (base env)
#   docker run --rm -v "$PWD/data:/app/data" ru-rlhf kedro run --env smoke  # toy sizes
#   docker run --rm -e KEDRO_ENV=smoke -v "$PWD/data:/app/data" ru-rlhf     # the same, by variable
#   docker run --rm -v "$PWD/data:/app/data" ru-rlhf kedro run --pipelines ingestion,sft
#   docker run --rm -v "$PWD/data:/app/data" -v /path/to/shared/data:/shared/data:ro \
#       ru-rlhf kedro run --env external          # ../shared/data seen from /app is /shared/data
#   docker run --rm -p 7860:7860 -v "$PWD/data:/app/data" ru-rlhf \
#       python -m ru_rlhf.app --host 0.0.0.0      # the A/B app, after a run has trained policies
#
# Mounting the checkout's data/ keeps the outputs on the host (the committed corpus in data/01_raw
# is in the image and in the checkout alike). Without a mount, outputs stay in the container.
# The image holds no credentials: conf/local/ is left out (.dockerignore); mount your own
# conf/local/credentials.yml for `python -m ru_rlhf.app --auth`. The `hub` env is not for this image:
# it needs a CUDA build of torch, a GPU and the *_OFFLINE variables below turned off.

FROM python:3.11-slim

# KEDRO_DISABLE_TELEMETRY ... TOKENIZERS_PARALLELISM as the Makefile exports them: no telemetry, and
# nothing fetched from a model hub at run time (DL3064: "TOKENIZERS" is no secret)
# hadolint ignore=DL3064
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KEDRO_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1 \
    HF_HUB_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

WORKDIR /app

# torch first, from the CPU index: the Linux torch wheels on the public index (PyPI) pull the CUDA
# libraries (gigabytes). pyproject.toml pins torch==2.13.0, which the installed 2.13.0+cpu satisfies,
# so the project install below keeps it. pip itself is upgraded unpinned, as `make install` does.
# hadolint ignore=DL3013
RUN python -m pip install --upgrade pip \
 && python -m pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"

# the project's dependencies, in a layer of their own (rebuilt only when pyproject.toml or src/ change)
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY src ./src
RUN python -m pip install -e . -c constraints.txt

# configuration, the committed bundled world (data/01_raw), docs, benchmarks, tests
COPY . .
# the default run env is `local` (conf/local must exist even when empty)
RUN mkdir -p conf/local

# override the command for another env or stage, e.g. `kedro run --env smoke`
CMD ["kedro", "run"]
