# Handover: the two commands a newcomer runs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= demo

.PHONY: venv tools lint test fuzz faults demo bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Standard tools used by the tests (Debian's age, minisign, chromium, sqlite3).
tools:
	@scripts/install-tools.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The suite in TEST_WORKERS processes, a module to each (most tests wait on the real servers,
# browsers and databases they start, so more workers than cores still helps).
TEST_WORKERS ?= 4
test: venv tools lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

# A long fuzzing run (tests/fuzz/): random, FUZZ_EXAMPLES inputs per target (the short,
# fixed run is part of `make test`). A crash is kept under tests/assets/fuzz/<target>/ and
# replayed by every later run; fix it, then commit the input.
FUZZ_EXAMPLES ?= 20000
fuzz: venv
	HANDOVER_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) HANDOVER_FUZZ_SAVE=1 $(BIN)/pytest -q tests/fuzz

# The long kill -9 campaign (tests/faults): real serve processes killed at seeded random
# moments, on SQLite and on two processes sharing PostgreSQL. FAULTS_SEEDS, FAULTS_PACKAGES,
# FAULTS_KILLS size it; each run's figures are appended to FAULTS_REPORT (docs/reliability.md).
FAULTS_REPORT ?= faults-report.jsonl
faults: venv tools
	FAULTS_REPORT=$(FAULTS_REPORT) $(BIN)/pytest -q -m faults_long tests/faults

demo: venv
	$(BIN)/handover demo --workdir $(DEMO_DIR) --fresh

bench: venv
	$(BIN)/python -m benchmarks

# PNGs of the web app's main pages (desktop and 375 px) in docs/screenshots/, from the
# demo's world served by real nodes and photographed in Debian's Chromium.
screenshots: venv tools
	$(BIN)/python -m tests.e2e.web.screenshots docs/screenshots

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
