# Thin, named entry points. `make lab` and `make test` are the README's two commands; both
# create .venv on first use and reinstall only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# JupyterLab refuses to run as root without --allow-root; a normal user must not pass it.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
PORT ?= 8888
LAB_ARGS ?=
# Every notebook execution is bounded: per cell (nbval) and for the whole run (timeout).
CELL_TIMEOUT ?= 180
TEST_TIMEOUT ?= 3600

.PHONY: install lab test lint nbval exercises sync html bench browser-deps clean induction-weights

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade-strategy only-if-needed -e '.[all,test]'
	@touch $@

install: $(STAMP)

lab: install
	$(BIN)/jupyter lab --port=$(PORT) $(ROOT_FLAG) --ServerApp.root_dir=. $(LAB_ARGS) notebooks/01_intuition.ipynb

# Debian's Chromium drives the real-browser test; Playwright's own browser download is never used.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: /usr/bin/chromium missing (install Debian's chromium); the browser test will be skipped"; fi

NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=$(CELL_TIMEOUT)

# Everything, then nbval once more: an output that matches once and not the next time is flaky.
test: install browser-deps
	$(BIN)/ruff check .
	timeout $(TEST_TIMEOUT) $(BIN)/pytest -n 2 --dist loadfile tests notebooks solutions $(NBVAL)
	timeout 1200 $(BIN)/pytest -n 2 --dist loadfile -q notebooks solutions $(NBVAL)

lint: install
	$(BIN)/ruff check .

# Regenerate exercises/ from solutions/ (never edit exercises/ by hand).
exercises: install
	$(BIN)/attention-course make-exercises

# Re-pair notebooks with their jupytext py:percent files (edit either, then run this).
sync: install
	$(BIN)/jupytext --sync notebooks/*.ipynb solutions/*.ipynb

html: install
	$(BIN)/python -m attention_course.teaching.html_build build/html

bench: install
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Lesson 14: retrain the shipped induction decoder (seeded, one thread; a minute or two on a laptop).
induction-weights: install
	PYTHONPATH=. $(BIN)/python scripts/train_induction.py

clean:
	rm -rf build .pytest_cache
