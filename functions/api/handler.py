"""The Lambda entry point: `functions.api.handler.handler`, the one FastAPI app behind Mangum.

Everything slow happens here, at init, not on the first request: the imports, reading the
settings, resolving `MODEL_URI` in the registry, downloading the model to WASTESORT_CACHE_DIR
(once per sandbox; warm invocations reuse it) and building the interpreter. The phases are
logged as one `cold start` line. A model that cannot load does not crash the init (which
would make Lambda retry it forever): `/health` and `/predict` answer 503 problems saying why,
and a later request tries again.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

from mangum import Mangum  # noqa: E402 - timed: the imports are a cold-start phase
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES  # noqa: E402

from functions.api.app import create_app  # noqa: E402
from functions.api.observability import logger  # noqa: E402
from functions.api.problems import MEDIA_TYPE  # noqa: E402
from functions.api.settings import Settings  # noqa: E402

_T_IMPORTS = time.perf_counter()

settings = Settings()
app = create_app(settings, load_on_startup=False)  # the only app this process builds
_T_APP = time.perf_counter()
app.state.model.load()
_T_MODEL = time.perf_counter()

# Lifespan off: Mangum would run startup/shutdown around every invocation. Problems are text
# (Mangum would otherwise base64 an `application/problem+json` body as if it were binary).
handler = Mangum(app, lifespan="off", text_mime_types=[*DEFAULT_TEXT_MIME_TYPES, MEDIA_TYPE])

COLD_START = {
    "imports_ms": round((_T_IMPORTS - _T0) * 1000, 1),
    "app_ms": round((_T_APP - _T_IMPORTS) * 1000, 1),
    "model_ms": round((_T_MODEL - _T_APP) * 1000, 1),
    "warmup_ms": app.state.model.warmup_ms,
    "total_ms": round((time.perf_counter() - _T0) * 1000, 1),
    "model_loaded": app.state.model.loaded,
    "model_version": app.state.model.version,
}
"""Init phases in ms: imports (FastAPI, pydantic, the core, the TFLite runtime), app (settings
and routes), model (resolve in the registry + download + verify sha256 + build interpreter +
one warm-up invoke, also given alone as warmup_ms)."""
logger.info("cold start", extra=COLD_START)
