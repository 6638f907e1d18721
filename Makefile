# The README's commands: `make test` and `make demo`. Both install into .venv first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The torch build to install first (pip keeps it when installing the project). Override for your CUDA:
#   make install TORCH_SPEC="torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install test lint format demo gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The whole chain offline on the built-in tiny model: sample set -> prepare-data -> train -> generate -> evaluate.
demo: $(STAMP)
	bash scripts/demo.sh

# Every check that needs a CUDA GPU: pytest -m gpu, the throughput suite, the demo -> gpu-check.json.
# Without CUDA: one line saying so, exit 2.
gpu-check: $(STAMP)
	$(BIN)/python scripts/gpu_check.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-output
