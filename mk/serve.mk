# make targets for the serving part (functions/api): the API locally, the Lambda package, benchmarks
# The API serves MODEL_URI (default: the bundled registry's `production` alias), e.g.
#   make serve MODEL_URI=s3://bucket/models@canary
HOST ?= 127.0.0.1
PORT ?= 8000
ARCH ?= arm64
# A Python of the Lambda runtime's version compiles the package's .pyc (read-only /var/task:
# without them every cold start compiles every module): python3.12 on PATH, or pyenv's.
PYTHON312 ?= $(or $(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null),\
	$(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12)))
.PHONY: serve package bench-serving screenshots

serve: $(SERVE_STAMP)  ## serve the API on the bundled model (functions.api.server, /docs; MODEL_URI, HOST, PORT)
	$(PY) -m functions.api.server --host $(HOST) --port $(PORT)

screenshots: $(STAMP)  ## the pages' screenshots in docs/img/ (the browser tests, in /usr/bin/chromium)
	WASTESORT_SCREENSHOTS=docs/img $(PY) -m pytest -q tests/api/test_api_pages_browser.py

package: $(STAMP)  ## build the Lambda packages build/lambda/api-arm64.zip and drift-arm64.zip without Docker (ARCH=x86_64 too)
	$(PY) -m tools.lambda_zip --arch $(ARCH) $(if $(PYTHON312),--compile-with $(PYTHON312))
	$(PY) -m tools.lambda_zip --package drift --arch $(ARCH) $(if $(PYTHON312),--compile-with $(PYTHON312))

bench-serving: $(STAMP)  ## serving benchmarks: HTTP load vs Keras, cold start vs TensorFlow, package sizes
	$(PY) -m bench.serving
