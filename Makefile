# The two commands a fresh machine needs:  `make demo` (main job on built-in synthetic data) and `make test`.
# Both create or refresh the virtual environment in .venv first.
#   GPU=1 make ...   installs PyTorch's default build and the `gpu` extra (CuPy, xFormers) instead of the pinned
#                    pair torch==2.14.1 + torchvision==0.29.1 (CUDA builds that also run on a CPU).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed$(if $(GPU),-gpu,)
# torch and torchvision pinned to a matching pair (timm, the evaluation's model library, imports torchvision).
TORCH_SPEC ?= $(if $(GPU),torch torchvision,torch==2.14.1 torchvision==0.29.1)
EXTRAS := $(if $(GPU),dev$(comma)gpu,dev)
comma := ,

.PHONY: install demo test lint bench image clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, so that nothing else fetches another build. cuCIM's CuPy extra then asks for CUDA 12
	# toolkits, which torch 2.14's CUDA 13 libraries exclude, and pip resolves that by swapping torch for an older
	# build: the pinned pair goes in again last (neither toolkit is used on a CPU). With GPU=1 the spec is not
	# pinned, so that last step keeps whatever build pip resolved.
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -c "import torch, torchvision, timm"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gapless demo --out runs/demo $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/gapless bench --quick --out runs/bench

image:
	bash docker/build_and_smoke.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
