# Thin, named entry points. `make lab` and `make test` are the README's two commands; both
# create .venv on first use and reinstall only when pyproject.toml changes.
SHELL := /bin/bash
# Python 3.11 to 3.13 (pyproject.toml's requires-python); 3.11 first, the version CI runs.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
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

.PHONY: install lab test test-fast lint nbval notebook exercises sync html bench workshop browser-deps clean induction-weights

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

# Lint, everything, then nbval once more: an output that matches once and not the next time is flaky.
test: lint browser-deps
	timeout $(TEST_TIMEOUT) $(BIN)/pytest -n 2 --dist loadfile tests notebooks solutions $(NBVAL)
	timeout 1200 $(BIN)/pytest -n 2 --dist loadfile -q notebooks solutions $(NBVAL)

# The unit tests alone (no notebooks, browser, `make lab`, model loading or Triton compiles; the
# `slow` marker is set in tests/conftest.py): about a minute on two idle cores.
test-fast: install
	timeout 600 $(BIN)/pytest -n 2 -q -m "not slow" tests

# Lint rules, formatting (`ruff format .` fixes it), and types (mypy, configured in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Every lesson and solution notebook, run in a fresh kernel and compared with its saved outputs.
nbval: install
	timeout 1200 $(BIN)/pytest -n 2 --dist loadfile -q notebooks solutions $(NBVAL)

# The author's loop for one lesson, e.g. `make notebook N=05`: sync each jupytext pair, execute the
# lesson (and its solution notebook) from the py:percent file, regenerate exercises/, then nbval them.
NOTEBOOK_PY = $(wildcard notebooks/$(N)_*.py solutions/$(N)_*.py)
notebook: install
	@test -n "$(N)" || { echo "usage: make notebook N=05 (the lesson number, e.g. 05 or 11b)"; exit 2; }
	@test -n "$(NOTEBOOK_PY)" || { echo "no notebooks/$(N)_*.py"; exit 2; }
	$(BIN)/jupytext --sync $(NOTEBOOK_PY)
	@for script in $(NOTEBOOK_PY); do \
	  echo "== execute $$script"; timeout 300 $(BIN)/jupytext --to ipynb --execute $$script || exit 1; done
	$(BIN)/attention-course make-exercises
	timeout 600 $(BIN)/pytest -q $(NBVAL) $(NOTEBOOK_PY:.py=.ipynb)

# Regenerate exercises/ from solutions/ (never edit exercises/ by hand).
exercises: install
	$(BIN)/attention-course make-exercises

# Re-pair notebooks with their jupytext py:percent files (edit either, then run this).
sync: install
	$(BIN)/jupytext --sync notebooks/*.ipynb solutions/*.ipynb

html: install
	$(BIN)/python -m attention_course.teaching.html_build build/html

# The workshop's two benchmarks need a hub and minutes: `make workshop` runs them.
bench: install
	@for script in $(filter-out benchmarks/bench_workshop.py benchmarks/bench_class_grading.py,$(wildcard benchmarks/*.py)); do \
	  echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Lesson 14: retrain the shipped induction decoder (seeded, one thread; a minute or two on a laptop).
induction-weights: install
	PYTHONPATH=. $(BIN)/python scripts/train_induction.py

# A workshop rehearsal on a real JupyterHub on loopback (hub from PyPI, its proxy from npm, both into this
# project: .venv and build/workshop), then a class of a hundred graded. Minutes; not part of `make test`.
WORKSHOP_PROXY := build/workshop/node_modules/.bin/configurable-http-proxy
$(WORKSHOP_PROXY):
	mkdir -p build/workshop && cd build/workshop && npm install --no-audit --no-fund --silent configurable-http-proxy@5

workshop: install $(WORKSHOP_PROXY)
	$(BIN)/python -m pip install --quiet -e '.[all,test,workshop]'
	$(BIN)/python benchmarks/bench_workshop.py
	$(BIN)/python benchmarks/bench_class_grading.py

clean:
	rm -rf build .pytest_cache
