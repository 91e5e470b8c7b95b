# Two commands, no set-up: `make test` and `make book`; `make lab` opens the notebooks in JupyterLab to explore.
# Each creates .venv/ on first use and installs the pinned set from environment.yml.
# All of them share the checkout's cache (.cache/casekit) and result store (results/<profile>).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.casekit-installed
PROFILE ?= both
# SCALE=full: every correctly classified image of each run's pool (results in results/<profile>-full)
SCALE ?= default
PAPERMILL_ARGS ?=
LAB_ARGS ?=
export CASEKIT_CACHE ?= $(CURDIR)/.cache/casekit
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: test book lab venv clean bench

venv: $(STAMP)

$(STAMP): environment.yml pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "casekit needs Python >= 3.11, found " + sys.version' 
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@sed -n '/^ *- pip:/,$$p' environment.yml | sed -n 's/^ *- \([A-Za-z0-9_.-]*==[^ ]*\).*/\1/p' > $(VENV)/requirements.txt
	@echo "installing the pinned set from environment.yml into $(VENV) (first run: a few minutes)"
	$(PY) -m pip install --disable-pip-version-check -q -r $(VENV)/requirements.txt 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	@touch $@

test: $(STAMP)
	$(VENV)/bin/ruff check casekit tests
	$(PY) -m pytest $(PYTEST_ARGS)

book: $(STAMP)
	$(PY) -m casekit.book --profile $(PROFILE) --scale $(SCALE) $(PAPERMILL_ARGS)

# JupyterLab on 127.0.0.1, opened on notebooks/, with make book's environment (figures inline, not Agg).
# Its log prints the URL (with the token) to open; e.g. `make lab LAB_ARGS="--no-browser --port 8899"`.
lab: $(STAMP)
	@echo "JupyterLab on notebooks/ (cache: $(CASEKIT_CACHE)); open the http://127.0.0.1:... URL below, Ctrl-C stops it"
	MPLBACKEND=module://matplotlib_inline.backend_inline PYDEVD_DISABLE_FILE_VALIDATION=1 $(PY) -m jupyterlab --ip 127.0.0.1 \
		--ServerApp.root_dir="$(CURDIR)/notebooks" $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

bench: $(STAMP)
	$(PY) -m casekit.bench $(BENCH_ARGS)

clean:
	rm -rf _build .pytest_cache
