# Two commands for a fresh machine:  `make demo` (the main job)  and  `make test` (the suite CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= data/tfds

.PHONY: demo test install clean serve

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python scripts/demo.py --data_dir=$(DATA_DIR) --out=results/demo

# The clinician web page over the demo's model (after `make demo`), on http://127.0.0.1:8000/ (install brings
# the web extra in with the test extra).
serve: install
	$(BIN)/python scripts/serve.py --workdir=workdirs/demo --eval_dir=results/demo/eval

# PYTEST_ARGS narrows a run, e.g. PYTEST_ARGS='-m "not slow"'.
PYTEST_ARGS ?=

test: install
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DATA_DIR)
