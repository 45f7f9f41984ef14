"""Which TFLite runtime runs the model, with how many threads and which delegate.

Preference: ai-edge-litert (the maintained runtime), then tflite-runtime (older Pi images).
Only the first import that succeeds is paid for. TensorFlow's own `tf.lite` is never used:
the serving path does not import TensorFlow.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from functools import cache
from typing import Any

from wastesort.errors import ModelError

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = {"linux": "libedgetpu.so.1", "darwin": "libedgetpu.1.dylib"}.get(
    sys.platform, "edgetpu.dll"
)

# (name reported, module with Interpreter and load_delegate). TensorFlow's own tf.lite is
# deliberately not one: the serving path never imports TensorFlow.
_CANDIDATES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
)


@dataclass(frozen=True)
class RuntimeInfo:
    """What runs the model: reported in /health and the edge heartbeat."""

    name: str
    version: str
    num_threads: int
    delegate: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "num_threads": self.num_threads,
            "delegate": self.delegate,
        }


@dataclass(frozen=True)
class _Backend:
    name: str
    version: str
    module: Any

    @property
    def interpreter_class(self) -> Any:
        return self.module.Interpreter

    def load_delegate(self, library: str) -> Any:
        return self.module.load_delegate(library)


@cache
def backend() -> _Backend:
    """The first importable runtime, or the one WASTESORT_RUNTIME names."""
    prefer = os.environ.get("WASTESORT_RUNTIME") or None
    names = [name for name, _ in _CANDIDATES]
    if prefer is not None and prefer not in names:
        raise ModelError(
            f"WASTESORT_RUNTIME={prefer} is not a runtime wastesort can use ({', '.join(names)})",
            code="no_runtime",
        )
    errors = []
    for name, module_name in _CANDIDATES:
        if prefer not in (None, name):
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        return _Backend(name, _version(name), module)
    raise ModelError(
        "no TFLite runtime is installed; install ai-edge-litert (or tflite-runtime on a device). "
        + "; ".join(errors),
        code="no_runtime",
    )


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def default_threads() -> int:
    """Threads per interpreter: WASTESORT_NUM_THREADS, else the CPUs we may use (max 4)."""
    configured = os.environ.get("WASTESORT_NUM_THREADS")
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise ModelError(
                f"WASTESORT_NUM_THREADS={configured} is not a whole number", code="bad_setting"
            ) from None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def load_edgetpu_delegate(library: str = EDGETPU_LIBRARY) -> Any | None:
    """The Edge TPU delegate, or None (logged once) when the library or device is missing.

    A failed `load_delegate` leaves a half-built Delegate whose `__del__` prints
    "Exception ignored in ... Delegate.__del__" to stderr; that noise is swallowed here
    while the real reason is logged.
    """
    runtime = backend()
    previous = sys.unraisablehook

    def quiet(unraisable: Any) -> None:
        if "Delegate.__del__" not in getattr(unraisable.object, "__qualname__", ""):
            previous(unraisable)

    sys.unraisablehook = quiet
    try:
        try:
            return runtime.load_delegate(library)
        except (OSError, ValueError, RuntimeError) as exc:
            reason = str(exc).strip() or type(exc).__name__
        gc.collect()  # the half-built Delegate dies now, while `quiet` is in place
    finally:
        sys.unraisablehook = previous
    log.warning("Edge TPU delegate unavailable (%s); running on the CPU", reason)
    return None


def make_interpreter(
    model_content: bytes, *, num_threads: int | None = None, delegates: list[Any] | None = None
) -> tuple[Any, RuntimeInfo]:
    """Build and allocate an interpreter for a model held in memory."""
    runtime = backend()
    threads = num_threads or default_threads()
    try:
        interpreter = runtime.interpreter_class(
            model_content=model_content,
            num_threads=threads,
            experimental_delegates=delegates or None,
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"the TFLite runtime cannot load this model: {exc}") from exc
    info = RuntimeInfo(runtime.name, runtime.version, threads, "edgetpu" if delegates else None)
    return interpreter, info
