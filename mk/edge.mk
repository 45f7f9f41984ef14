# make targets for the edge part
# .venv-pi is what a Raspberry Pi has: tflite-runtime (built against NumPy 1.x), no
# ai-edge-litert, no TensorFlow. The tiny test model is built once by the main venv.
PI_PYTHON ?= python3.11
PI_VENV := .venv-pi
PI_PY := $(PI_VENV)/bin/python
PI_STAMP := $(PI_VENV)/.installed
PI_PACKAGES := "tflite-runtime==2.14.0" "numpy>=1.26,<2" "pillow>=11,<14" "pydantic>=2.10,<3" \
	"pydantic-settings>=2.6,<3" "pyyaml>=6,<7" "boto3>=1.40,<2" "httpx>=0.28,<0.29" \
	"cryptography>=44,<51" "gpiozero>=2.0,<3" "moto[s3]>=5.1,<6" "pytest>=8,<10"
TINY_DIR := build/tiny-models
EDGE_MODEL ?=
EDGE_STATE ?= build/edge-state

.PHONY: test-pi edge-run bench-edge

$(PI_STAMP): pyproject.toml mk/edge.mk
	$(PI_PYTHON) -m venv $(PI_VENV)
	$(PI_PY) -m pip install -q --upgrade pip
	$(PI_PY) -m pip install -q $(PI_PACKAGES)
	$(PI_PY) -m pip install -q --no-deps -e .
	touch $(PI_STAMP)

$(TINY_DIR)/tiny_int8.tflite: tests/tiny_model.py $(STAMP)
	$(PY) tests/tiny_model.py $(TINY_DIR)

test-pi: $(PI_STAMP) $(TINY_DIR)/tiny_int8.tflite  ## edge tests in a Pi-like venv: tflite-runtime, numpy<2, no TensorFlow
	@! $(PI_PY) -c "import tensorflow" 2>/dev/null || { echo "$(PI_VENV) has TensorFlow"; exit 1; }
	@! $(PI_PY) -c "import ai_edge_litert" 2>/dev/null || { echo "$(PI_VENV) has ai-edge-litert"; exit 1; }
	WASTESORT_TINY_MODELS=$(abspath $(TINY_DIR)) WASTESORT_EXPECT_RUNTIME=tflite-runtime \
		$(PI_PY) -m pytest tests/edge tests/core/test_named_outputs.py tests/core/test_reference.py tests/core/test_manifest_schema.py \
		tests/core/test_rollout.py tests/core/test_records.py

edge-run: $(STAMP)  ## a local trial of the edge runner on samples/ (EDGE_MODEL=registry URI)
	$(PY) -m edge run --source folder:samples --once --json --state-dir $(EDGE_STATE) \
		$(if $(EDGE_MODEL),--model $(EDGE_MODEL))

bench-edge: $(STAMP)  ## edge runner vs bare core throughput, per-stage latency, peak RSS
	$(PY) -m bench edge
