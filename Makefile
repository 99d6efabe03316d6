# One install for everything: `make demo` launches the workbench, `make test` runs the tests.
VENV   ?= .venv
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && echo $$p && break; done)
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.earmark-installed
SESSION ?= sessions/demo
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench clean-demo

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Earmark needs Python >= 3.11 (python3.11 or newer on PATH)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# Builds the demo session when missing, then serves it on http://127.0.0.1:7860
demo: install
	$(PY) app.py demo --session $(SESSION)
	$(PY) app.py serve --session $(SESSION)

# The whole suite (slow and browser tests included). pytest's exit code 5 (no tests) is an error.
test: install
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests (exit 5): failing, the suite must never be empty"; fi; \
	exit $$status

# The fast tests only, for the edit-run loop.
test-fast: install
	$(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

bench: install
	$(PY) bench/store.py
	$(PY) bench/importing.py
	$(PY) bench/features.py
	$(PY) bench/augment.py
	$(PY) bench/review_latency.py
	$(PY) bench/vad.py
	$(PY) bench/factorial.py
	$(PY) bench/speech_quality.py
	$(PY) bench/double_annotation.py
	$(PY) bench/study.py
	$(PY) bench/speech_llm.py
	$(PY) bench/review_browser.py
	$(PY) bench/active_learning.py

clean-demo:
	rm -rf sessions/demo data/demo_audio
