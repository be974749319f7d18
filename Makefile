# Two commands for a fresh machine:  `make demo` (the main job)  and  `make test` (the suite CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= data/tfds

.PHONY: demo test install clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python scripts/demo.py --data_dir=$(DATA_DIR) --out=results/demo

test: install
	$(BIN)/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) $(DATA_DIR)
