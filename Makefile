# Two commands (see README): `make demo` and `make test`. Each creates .venv when missing.
# GPU machines: install a CUDA build of torch into .venv first (see README), or pass
# TORCH_SPEC, e.g. make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench results clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	@$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	@$(VENV)/bin/vidsim2real scene check scenes/*.yaml
	@$(VENV)/bin/vidsim2real render scenes/instrument_pass.yaml -o out/demo_sim.mp4 --size 256x256 --force
	@$(VENV)/bin/vidsim2real translate checkpoints/cpu_small.pt scenes/instrument_pass.yaml \
		-o out/demo_translated.mp4 --size 256x256 --side-by-side --force
	@echo "demo videos: $(CURDIR)/out/demo_sim.mp4 (sim render), $(CURDIR)/out/demo_translated.mp4 (sim | translated)"

TEST_WORKERS ?= auto
test: $(STAMP)
	@$(PY) -m pytest -q -n $(TEST_WORKERS)

bench: $(STAMP)
	@$(PY) benchmarks/bm_raster.py
	@$(PY) benchmarks/bm_render.py
	@$(PY) benchmarks/bm_translate.py
	@$(PY) benchmarks/bm_train_step.py
	@$(PY) benchmarks/bm_metrics.py

results: $(STAMP)
	@$(PY) benchmarks/temporal_table.py

clean-venv:
	rm -rf $(VENV)
