# make targets for the edge part
.PHONY: test-pi
test-pi:  ## edge tests in a Pi-like venv: tflite-runtime, numpy<2, no TensorFlow
	@echo "test-pi: not set up yet"
