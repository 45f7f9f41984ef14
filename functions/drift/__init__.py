"""The scheduled drift and fleet watch: `functions.drift.handler.handler`, run by EventBridge.

`watch` judges the last window of prediction records per model version and per device with the
core's one drift report, and summarizes the fleet's heartbeats; `handler` wires it to S3 and
publishes the outcome as EMF metrics. Its package (`python -m tools.lambda_zip --package
drift`) holds numpy, pydantic and Powertools, not Pillow, FastAPI or a TFLite runtime.
"""
