# Two commands on a fresh machine: `make run` and `make test`. Both create .venv if it is
# missing and install the project (torch first, pinned to the CPU wheel) before they run.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
KEDRO := $(VENV)/bin/kedro
ENV ?= base

# No telemetry. Nothing is fetched from a model hub at run time, except in the hub env (`make run ENV=hub`),
# whose models come from the hub.
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
ifneq ($(ENV),hub)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
endif
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test lint world bench browser

# pip byte-compiles the environment as it installs (about a minute). Keep it: where PYTHONDONTWRITEBYTECODE is set
# (as on the machines this project is tested on) Python never caches a compiled module itself, so without it every
# process (each `kedro run`, each test's subprocess) compiles torch, transformers and the rest again at import
# (benchmarks/bench_startup.py measures both)
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]" -c constraints.txt
	@touch $@

install: $(VENV)/.installed

run: install
	@if [ "$(ENV)" = local_models ]; then $(PY) scripts/make_local_models.py; fi
	$(KEDRO) run --env $(ENV)

# Debian's Chromium for the browser tests (never a downloaded browser); skipped with a note where apt
# cannot run, and then the browser tests skip too (CI sets RU_RLHF_REQUIRE_BROWSER=1 so they cannot).
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: /usr/bin/chromium missing and apt unavailable; browser tests will skip"; fi

# One pytest-xdist worker per core (TEST_WORKERS=auto, the default); tests that share an expensive fixture run on
# one worker (tests/conftest.py), and each worker's torch uses its share of the cores. TEST_WORKERS=0 runs the suite
# in this one process (slower; for debugging with pdb).
TEST_WORKERS ?= auto
test: install browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests

# Regenerate the committed bundled world byte-identically.
world: install
	$(PY) -m ru_rlhf.world --out data/01_raw

# Benchmarks (not tests): each appends its figures to docs/benchmarks.md. The base end-to-end run
# comes first (it makes every input the others read) and is profiled with py-spy.
bench: install
	$(PY) benchmarks/bench_e2e.py --env smoke
	$(PY) benchmarks/bench_e2e.py --env base --profile
	$(PY) benchmarks/bench_generation.py
	$(PY) benchmarks/bench_dpo.py --env base
	$(PY) benchmarks/bench_rl.py
