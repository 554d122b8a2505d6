# Set-up and the two everyday commands. Each target creates the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test lint lock

venv: $(STAMP)

# Reinstall when the dependency list or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,onnx,openvino]'
	touch $(STAMP)

## demo: the demo sweep (both tasks; generates its synthetic cohort once), tracked in ./mlflow.db.
demo: venv
	$(BIN)/harness run examples/sweep.yaml --fresh

## test: lint, then the test suite (what CI runs).
test: venv lint
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## lock: re-pin constraints.txt from the current environment.
lock: venv
	{ echo "# Pinned versions for the README's set-up and CI (pip install -c constraints.txt ...)."; \
	  echo "# Regenerate after a dependency change: make lock"; \
	  $(BIN)/python -m pip freeze --all --exclude-editable | grep -v "^pip=="; } > constraints.txt
