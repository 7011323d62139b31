# music: `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist
ARGS ?= experiment=sequential data=fashion_mnist
SWEEP ?= $(lastword $(sort $(wildcard logs/train/multiruns/*)))

.PHONY: help install data slurm lint test test-all train report bench docs clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

install: data slurm  ## virtual env in .venv with torch 2.14.1, the project (editable) and its dev extras
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'

data:  ## real Fashion-MNIST from Debian's dataset-fashion-mnist (for the real-data tests; needs root)
	@if [ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST: $(FASHION_MNIST)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install -y dataset-fashion-mnist' (or set FASHION_MNIST_DIR for the tests)"; fi

slurm:  ## Debian's slurm-wlm and munge (the Slurm tests start a one-node cluster with them; needs root)
	@if [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/munged ]; then echo "Slurm: $$(/usr/sbin/slurmctld -V)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq slurm-wlm munge; \
	else echo "Slurm missing: run 'sudo apt-get install -y slurm-wlm munge' (the Slurm tests fail without it)"; fi

lint:  ## ruff: lint and format check (configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint  ## lint, then the default test tier (unit, integration, real data; a few minutes on 2 cores)
	$(PY) -m pytest -m "not slow and not gpu"

test-all:  ## every test, slow ones included (not those that need a GPU)
	$(PY) -m pytest -m "not gpu"

train:  ## one job: make train ARGS="experiment=merged data=fashion_mnist ..."
	$(PY) train.py $(ARGS)

report:  ## table (mean ± 95% CI) and plots of a sweep: make report SWEEP=<sweep folder> (default: the latest under logs/train/multiruns)
	@test -n "$(SWEEP)" || { echo "error: no sweep under logs/train/multiruns: make report SWEEP=<sweep folder>" >&2; exit 2; }
	$(PY) -m music.report $(SWEEP)

bench:  ## performance figures (medians, machine, targets) -> logs/bench/bench.json, storage.json (~10 min)
	$(PY) benchmarks/bench.py --data-dir $(FASHION_MNIST) --out logs/bench/bench.json
	$(PY) benchmarks/storage.py --out logs/bench/storage.json

docs:  ## the documentation site (mkdocs, material theme; docs/, mkdocs.yml) -> site/, a broken link an error
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:  ## remove run outputs, the artifact cache and Python caches (keeps downloaded data)
	find logs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf .pytest_cache site
	find . -name __pycache__ -not -path './$(VENV)/*' -exec rm -rf {} +
