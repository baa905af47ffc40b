# cortexlink — two commands: `make demo` and `make test`; `make install` sets up .venv alone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-load lint evidence bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,bench,torch,evidence]"
	touch $(STAMP)

demo: install
	$(BIN)/cortexlink demo

# two pytest workers (pytest-xdist), each running whole test files (module fixtures are built once):
# 7 min instead of 14 on a 2-core machine, where one worker leaves the second core idle while tests wait
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# the same suite again under background CPU load: stress-ng keeps every core busy (one CPU stressor per
# core) while pytest runs, and is stopped when pytest ends, whatever its result; a test that depends on
# the machine's speed (a deadline, a count of dropped messages) fails here. CI runs it after `make test`
# (about twice as long; stress-ng's own --timeout is a backstop). Debian: apt-get install stress-ng
# pytest runs in the background of the recipe's shell so that a stop signal (SIGTERM, Ctrl+C) to it
# ends pytest and stress-ng at once; its exit status is the target's.
LOAD_TIMEOUT_S ?= 5400
test-load: install
	@command -v stress-ng >/dev/null 2>&1 || { echo "make test-load needs stress-ng (Debian: apt-get install stress-ng)" >&2; exit 2; }
	@stress-ng --cpu 0 --timeout $(LOAD_TIMEOUT_S) --quiet & load=$$!; \
	echo "stress-ng --cpu 0 (pid $$load) on $$(nproc) cores while pytest runs"; \
	$(BIN)/python -m pytest -q -n 2 --dist loadfile & tests=$$!; \
	trap 'kill $$tests $$load 2>/dev/null; wait $$tests; exit 143' TERM; \
	trap 'kill $$tests $$load 2>/dev/null; wait $$tests; exit 130' INT; \
	wait $$tests; rc=$$?; kill $$load 2>/dev/null; wait $$load 2>/dev/null; exit $$rc

# static analysis, configured in pyproject.toml: ruff on src and tests, mypy --strict on core and the
# safety-critical packages, bandit on src (tests/test_static_analysis.py runs the same under `make test`)
lint: install
	$(BIN)/python -m ruff check src tests
	$(BIN)/python -m mypy
	$(BIN)/python -m bandit -c pyproject.toml -r src -q

# the safety evidence: the suite with branch coverage, requirements traced to tests, mutation scores of
# the safety-critical files, ruff/mypy/bandit, SOUP with pip-audit, a CycloneDX SBOM ->
# evidence/report.html and evidence/evidence.json; fails when a safety requirement has no passing test
# or a goal is missed (about an hour on 2 cores, most of it mutation testing)
evidence: install
	$(BIN)/cortexlink evidence --out evidence

bench: install
	$(BIN)/cortexlink bench dsp --json

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache evidence mutants
