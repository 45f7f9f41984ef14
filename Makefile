# wastesort: one venv (.venv) for everything but the Pi-like edge venv (.venv-pi).
# `make demo` and `make test` work on a fresh clone with Python 3.11, pip and node 20.
# Two stamps in the one .venv: the serving targets (demo, serve, classify) need only the `serve`
# extra (no TensorFlow, no CDK), so a fresh `make demo` is up in about a minute; everything
# else needs every extra, and that full install also stands for the serving one.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve

.DEFAULT_GOAL := help
.PHONY: help venv lint format test test-core demo classify bench clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[train,serve,edge,infra,dev]"
	touch $(STAMP) $(SERVE_STAMP)

# A current full install already holds the serve extra: then only the stamp is written.
$(SERVE_STAMP): pyproject.toml
	@if [ $(STAMP) -nt pyproject.toml ]; then touch $@; else \
		echo "installing the serve extra into $(VENV) (no TensorFlow, no CDK)"; \
		$(PYTHON) -m venv $(VENV) && \
		$(PY) -m pip install -q --upgrade pip && \
		$(PY) -m pip install -q -e ".[serve]" && touch $@; fi

venv: $(STAMP)  ## create .venv with every extra (what `make test` installs)

lint: $(STAMP)  ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint $(STAMP)  ## set up and run every test (lint, pytest, the Pi-like edge venv)
	$(PY) -m pytest
	$(MAKE) test-pi

classify: $(SERVE_STAMP)  ## classify the sample images with the bundled model
	$(PY) -m wastesort classify samples/

# The demo captures every photo tried on / into DEMO_CAPTURES, so /review has something to label;
# the admin token for /review is API_ADMIN_TOKEN if set, else a new one printed at start.
DEMO_CAPTURES ?= build/captures
demo: $(SERVE_STAMP)  ## classify samples/, then serve the API and its pages with capture on (serve extra only)
	@mkdir -p $(DEMO_CAPTURES)
	@$(PY) -m wastesort classify samples/
	@token="$${API_ADMIN_TOKEN:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(12))')}"; \
	echo ""; \
	echo "Try it (phone-sized too):  http://$(HOST):$(PORT)/"; \
	echo "Review the captures:       http://$(HOST):$(PORT)/review   admin token: $$token"; \
	echo "API docs:                  http://$(HOST):$(PORT)/docs"; \
	echo "Or classify a photo: curl -s -F file=@samples/glass/glass51.jpg http://$(HOST):$(PORT)/predict"; \
	echo "Captures go to $(DEMO_CAPTURES)/"; \
	echo ""; \
	API_CAPTURE_URI="$(abspath $(DEMO_CAPTURES))" API_CAPTURE_SAMPLE="$${API_CAPTURE_SAMPLE:-1}" \
		API_ADMIN_TOKEN="$$token" $(MAKE) --no-print-directory serve

bench: $(STAMP)  ## run every benchmark; tables on stdout, JSON in bench/results/
	$(PY) -m bench

clean:
	rm -rf build cdk.out .pytest_cache .ruff_cache

include mk/*.mk
