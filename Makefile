# The README's two commands, `make train` and `make test`, do all set-up themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The four original Fashion-MNIST .gz files; TFDS takes them from here when offline.
MANUAL_DIR ?= $(abspath ../shared/data/fashion_mnist)
WORKDIR ?= workdirs/default
CONFIG ?= configs/default.py
ARGS ?=

MANUAL_FLAG := $(if $(wildcard $(MANUAL_DIR)/train-images-idx3-ubyte.gz),--config.data.manual_dir=$(MANUAL_DIR),)

.PHONY: setup train test test-fast benchmark offline-bundle clean

setup: $(VENV)/.installed

# Re-installs only when the dependency list changes. --no-compile: byte-
# compiling every module of TensorFlow and PyTorch was most of a fresh
# install here (60 s with the option in a new venv; about 150 s without, in
# .ci/run); Python compiles the modules it imports on first use instead.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -e '.[test,bench]'
	touch $@

train: setup
	$(PY) -m cnn_jax.main --config=$(CONFIG) --workdir=$(WORKDIR) $(MANUAL_FLAG) $(ARGS)

# JAX against the seed's PyTorch model; writes $(BENCH_DIR)/benchmark.{json,md}.
# Empty: experiments/benchmark/<device>, e.g. cpu or nvidia-h200.
BENCH_DIR ?=
benchmark: setup
	$(PY) -m cnn_jax.benchmark --workdir=$(BENCH_DIR) --manual_dir=$(MANUAL_DIR) $(ARGS)

# What an offline GPU host needs (no network or TensorFlow there): .whl/, the
# wheels its image lacks, and .gpu/, the decoded data. Copy both with the repo;
# scripts/gpu_check.sh uses them there.
offline-bundle: setup
	MANUAL_DIR=$(MANUAL_DIR) PY=$(PY) bash scripts/gpu_offline_bundle.sh

test: setup
	CNN_JAX_MANUAL_DIR=$(MANUAL_DIR) $(PY) -m pytest tests

# The inner loop: every test but those marked slow (real data, kills, other
# processes training). `make test`, as CI, runs them all.
test-fast: setup
	CNN_JAX_MANUAL_DIR=$(MANUAL_DIR) $(PY) -m pytest tests -m 'not slow'

clean:
	rm -rf $(VENV) workdirs
