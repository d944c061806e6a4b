# vidsr - set-up, tests, lint and demo. Everything runs inside .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build by default (fast, local here). GPU users: see README, e.g.
#   make setup TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu126"
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup test lint format demo clean gpu-check

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev,openvino,onnx]'
	# spandrel without its dependencies: they pull torchvision, and with it a multi-GB CUDA
	# torch over the CPU one (the tests put a stand-in torchvision on the path instead)
	$(BIN)/pip install -q --no-deps 'spandrel==0.4.2' 'einops>=0.7'
	# BasicSR 1.4.2's sources, for the tests that compare vidsr's training degradations with
	# its own (loaded by path: its package import needs torchvision); no build isolation, or
	# its setup_requires pulls a CUDA torch
	$(BIN)/pip install -q setuptools wheel
	$(BIN)/pip install -q --no-deps --no-build-isolation 'basicsr==1.4.2'
	touch $@

# The tests also exercise the optional Ray backend on a real local cluster.
$(VENV)/.ray-done: $(VENV)/.setup-done
	$(BIN)/pip install -q -e '.[dev,ray]'
	touch $@

test: setup $(VENV)/.ray-done
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The GPU check (benchmarks/gpu_check.py): on a machine without CUDA it skips each GPU step.
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py --out $(or $(GPU_CHECK_OUT),gpu_check.json)

lint: setup
	$(BIN)/ruff check vidsr tests benchmarks samples
	$(BIN)/ruff format --check vidsr tests benchmarks samples

format: setup
	$(BIN)/ruff format vidsr tests benchmarks samples
	$(BIN)/ruff check --fix vidsr tests benchmarks samples

demo: setup
	mkdir -p demo-out
	$(BIN)/vidsr upscale samples/clip.mkv -o demo-out/clip.x4.mkv --overwrite
	@echo "demo: wrote demo-out/clip.x4.mkv (video x4, audio, styled subtitles, font, chapters kept)"

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
