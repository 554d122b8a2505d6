# Set-up and the two everyday commands. Each target creates the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO ?= data/demo

.PHONY: venv demo test lint lock clean-demo

venv: $(STAMP)

# Reinstall when the dependency list or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## demo: generate the 60-patient, 3-centre synthetic cohort (once) and check it.
demo: venv
	test -f $(DEMO)/manifest.csv || $(BIN)/harness synth $(DEMO) --patients 60 --centers 3 --seed 0
	$(BIN)/harness data check $(DEMO)

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
	  $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt

clean-demo:
	rm -rf $(DEMO)
