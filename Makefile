# wastesort: one venv (.venv) for everything but the Pi-like edge venv (.venv-pi).
# `make demo` and `make test` work on a fresh clone with Python 3.11, pip and node 20.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv lint format test test-core demo classify bench clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[train,serve,edge,infra,dev]"
	touch $(STAMP)

venv: $(STAMP)  ## create .venv with every extra

lint: $(STAMP)  ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint $(STAMP)  ## set up and run every test (lint, pytest, the Pi-like edge venv)
	$(PY) -m pytest
	$(MAKE) test-pi

classify: $(STAMP)  ## classify the sample images with the bundled model
	$(PY) -m wastesort classify samples/

demo: $(STAMP)  ## classify the samples with the bundled model, then serve the API on :8000
	$(PY) -m wastesort classify samples/
	$(MAKE) serve

bench: $(STAMP)  ## run every benchmark; tables on stdout, JSON in bench/results/
	$(PY) -m bench

clean:
	rm -rf build cdk.out .pytest_cache .ruff_cache

include mk/*.mk
