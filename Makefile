# cortexlink — two commands: `make demo` and `make test`; `make install` sets up .venv alone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,bench,torch]"
	touch $(STAMP)

demo: install
	$(BIN)/cortexlink demo

# two pytest workers (pytest-xdist), each running whole test files (module fixtures are built once):
# 7 min instead of 14 on a 2-core machine, where one worker leaves the second core idle while tests wait
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: install
	$(BIN)/cortexlink bench dsp --json

clean:
	rm -rf $(VENV) runs .pytest_cache
