"""The baseline the serving benchmarks compare against: the common way to serve a Keras model.

A FastAPI app that loads the `.keras` model with TensorFlow and calls `model.predict` per
request, with the usual Pillow preprocessing. `handler` is the same app on Lambda (Mangum),
for the cold-start comparison; the model comes from `KERAS_MODEL` (a path or `s3://`).

    KERAS_MODEL=build/bench-serving/standin/model.keras uvicorn bench.keras_baseline_app:app
"""

from __future__ import annotations

import io
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from mangum import Mangum
from PIL import Image
from starlette.concurrency import run_in_threadpool

LABELS = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]


def _fetch(uri: str) -> str:
    if not uri.startswith("s3://"):
        return uri
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    dest = os.path.join(tempfile.gettempdir(), "keras-baseline", os.path.basename(key))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if not os.path.exists(dest):
        boto3.client("s3").download_file(bucket, key, dest)
    return dest


model = keras.models.load_model(_fetch(os.environ["KERAS_MODEL"]), compile=False)
_, HEIGHT, WIDTH, _ = model.input_shape
app = FastAPI(title="keras baseline")


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/predict")
async def predict(request: Request) -> dict:
    """Raw image body in, the class out; `model.predict` per request in the threadpool."""
    start = time.perf_counter()
    data = await request.body()
    try:
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((WIDTH, HEIGHT))
    except Exception as exc:
        raise HTTPException(400, f"bad image: {exc}") from None
    x = np.asarray(image, dtype=np.float32)[None]
    logits = (await run_in_threadpool(model.predict, x, verbose=0))[0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    best = int(probs.argmax())
    return {
        "predicted_class": LABELS[best],
        "confidence": float(probs[best]),
        "all_confidences": {LABELS[i]: float(p) for i, p in enumerate(probs)},
        "latency_ms": round((time.perf_counter() - start) * 1000, 2),
    }


handler = Mangum(app, lifespan="off")
