"""`Classifier`: a verified TFLite model plus its manifest entry, turning image bytes into a
`Prediction`. The API, the edge runner and training's evaluation all classify through it."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wastesort import artifacts, scoring
from wastesort.errors import ImageError, IntegrityError, ModelError
from wastesort.interpreter import EMBEDDING, LOGITS, Slot
from wastesort.manifest import InputSpec, ModelEntry, OutputSpec
from wastesort.preprocess import DEFAULT_MAX_PIXELS, load_image, to_tensor
from wastesort.reference import Reference
from wastesort.runtime import RuntimeInfo, load_edgetpu_delegate, make_interpreter

if TYPE_CHECKING:
    from collections.abc import Iterator

    from PIL import Image

log = logging.getLogger(__name__)

BUNDLED_REGISTRY = Path(__file__).resolve().parent.parent / "models"


def default_model_uri() -> str:
    """WASTESORT_MODEL, else the bundled registry's `production` alias."""
    return os.environ.get("WASTESORT_MODEL") or str(BUNDLED_REGISTRY)


def split_ref(uri: str) -> tuple[str, str | None]:
    """`base@ref` -> (base, ref); the `@` must be in the last path segment.

    A `.tflite` path is a file, whatever its name holds (`model@v2.tflite`): no version id
    or alias ends in `.tflite`.
    """
    base, sep, ref = str(uri).rpartition("@")
    if sep and ref and "/" not in ref and not ref.endswith(".tflite"):
        return base, ref
    return str(uri), None


@dataclass(frozen=True)
class Prediction:
    predicted_class: str
    confidence: float
    all_confidences: dict[str, float]
    decision: str
    """The class, or `uncertain` when confidence is below the model's recorded threshold."""
    model_version: str
    embedding: list[float] | None = None
    """The image's embedding in the reference's PCA space (32-d), when the version has a
    reference file and an `embedding` output."""
    image_stats: dict[str, float] | None = None
    """Brightness, contrast, colourfulness, blur of the model input, when the version has a
    reference file (`wastesort.reference.STATS`)."""

    def to_dict(self, *, details: bool = False) -> dict[str, Any]:
        """The CLI/API fields; `details` adds `embedding` and `image_stats` (when known)."""
        data = asdict(self)
        if not details:
            data.pop("embedding")
            data.pop("image_stats")
        return data


class Classifier:
    """A model ready to classify; safe to share between threads.

    Each call borrows an interpreter from a small pool (TFLite interpreters are not
    thread-safe); `pool_size` interpreters are built at most, lazily.
    """

    def __init__(
        self,
        model_content: bytes,
        entry: ModelEntry,
        *,
        num_threads: int | None = None,
        delegate: str | None = None,
        pool_size: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        reference: Reference | None = None,
    ) -> None:
        self.entry = entry
        self.reference = reference
        """The version's reference file, when it has one: predictions then carry
        `image_stats`, and `embedding` when the model has that output."""
        self.labels = list(entry.labels)
        self.max_pixels = max_pixels
        self._content = model_content
        self._num_threads = num_threads
        self._delegate = delegate
        self._pool_size = pool_size or int(os.environ.get("WASTESORT_INTERPRETERS", "1"))
        self._pool: queue.LifoQueue[Slot] = queue.LifoQueue()
        self._built = 0
        self._build_lock = threading.Lock()
        first = self._build()  # fail at load time, not on the first request
        self.runtime: RuntimeInfo = first.info
        self._check_io(first)
        self._names = (LOGITS, EMBEDDING) if self._wants_embedding(first) else (LOGITS,)
        self._pool.put(first)
        self.load_timings: dict[str, float] = {}
        """Where `load` spent its time (for cold-start logs)."""

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        uri: str | Path | None = None,
        *,
        cache_dir: str | Path | None = None,
        public_key: bytes | str | Path | None = None,
        expected_sha256: str | None = None,
        labels: Sequence[str] | None = None,
        delegate: str | None = None,
        temperature: float | None = None,
        uncertain_threshold: float | None = None,
        **options: Any,
    ) -> Classifier:
        """Load a model from a registry URI (`[@version|@alias]`) or a bare `.tflite` file.

        Args:
            uri: a local registry folder, `s3://bucket/prefix`, either with `@ref`, or a
                `.tflite` path; None means WASTESORT_MODEL or the bundled registry.
            cache_dir: where downloads are kept (default WASTESORT_CACHE_DIR or ~/.cache).
            public_key: an ed25519 public key (PEM); when given the entry must be signed by it.
            expected_sha256: refuse the model unless its sha256 is this (e.g. MODEL_SHA256).
            labels: the class names, for a bare `.tflite` without a labels file.
            delegate: `edgetpu` to run on a Coral when present (CPU otherwise).
            temperature, uncertain_threshold: override the entry's values (evaluation).
            **options: num_threads, pool_size, max_pixels, reference (None: not the version's).

        Raises:
            ModelError: unknown version, integrity or signature failure, unloadable model.
        """
        started = time.perf_counter()
        base, ref = split_ref(str(uri or default_model_uri()))
        if base.endswith(".tflite"):
            content = artifacts.read_model_file(Path(base))
            entry = artifacts.entry_for_file(Path(base), content, labels)
        else:
            from wastesort.registry import Registry  # noqa: PLC0415 (not for bare files)

            registry = Registry.from_uri(base, cache_dir=cache_dir)
            choice = artifacts.choose(
                registry.resolve(ref), delegate=delegate, public_key=public_key
            )
            content = artifacts.fetch(registry, choice)  # the very bytes that were verified
            entry, delegate = choice.entry, choice.delegate
            if entry.reference is not None and "reference" not in options:
                _, data = registry.fetch_content(entry.reference)  # sha256 verified
                options["reference"] = Reference.loads(data)
        if expected_sha256 and entry.sha256 != expected_sha256.lower():
            raise IntegrityError(
                f"model {entry.version} has sha256 {entry.sha256[:12]}..., "
                f"expected {expected_sha256[:12]}..."
            )
        overrides = {
            key: value
            for key, value in (
                ("temperature", temperature),
                ("uncertain_threshold", uncertain_threshold),
            )
            if value is not None
        }
        if overrides:
            entry = entry.model_copy(update=overrides)
        fetched = time.perf_counter()
        classifier = cls(content, entry, delegate=delegate, **options)
        classifier.load_timings = {
            "fetch_ms": round((fetched - started) * 1000, 1),  # resolve, download, verify
            "build_ms": round((time.perf_counter() - fetched) * 1000, 1),  # interpreter
        }
        return classifier

    def _build(self) -> Slot:
        delegates = None
        if self._delegate == "edgetpu":
            loaded = load_edgetpu_delegate()
            delegates = [loaded] if loaded is not None else None
        interpreter, info = make_interpreter(
            self._content, num_threads=self._num_threads, delegates=delegates
        )
        self._built += 1
        return Slot(interpreter, info)

    def _check_io(self, slot: Slot) -> None:
        spec = self.entry.input
        shape = tuple(slot.input["shape"][1:])
        if shape != (spec.height, spec.width, spec.channels):
            raise ModelError(
                f"model {self.version} takes {shape} but its manifest says "
                f"{(spec.height, spec.width, spec.channels)}"
            )
        classes = int(slot.output["shape"][-1])
        if classes != len(self.labels):
            raise ModelError(
                f"model {self.version} outputs {classes} scores for {len(self.labels)} labels"
            )
        missing = sorted(set(self.entry.outputs or ()) - set(slot.outputs))
        if missing:
            raise ModelError(
                f"model {self.version} has no output named {', '.join(missing)} "
                f"(it has {', '.join(sorted(slot.outputs))}) but its manifest lists it"
            )

    def _wants_embedding(self, slot: Slot) -> bool:
        if self.reference is None or EMBEDDING not in slot.outputs:
            return False
        width = int(slot.outputs[EMBEDDING]["shape"][-1])
        if width != self.reference.mean.shape[-1]:
            raise ModelError(
                f"model {self.version} has a {width}-wide embedding but its reference "
                f"projects {self.reference.mean.shape[-1]}"
            )
        return True

    @contextmanager
    def _borrow(self) -> Iterator[Slot]:
        try:
            slot = self._pool.get_nowait()
        except queue.Empty:
            with self._build_lock:
                grow = self._built < self._pool_size
                slot = self._build() if grow else None
            if slot is None:
                slot = self._pool.get()
        try:
            yield slot
        finally:
            self._pool.put(slot)

    # --- classifying -------------------------------------------------------------------------

    @property
    def model_content(self) -> bytes:
        """The verified model bytes this classifier runs (for a bare interpreter beside it)."""
        return self._content

    @property
    def version(self) -> str:
        return self.entry.version

    @property
    def input_spec(self) -> InputSpec:
        return self.entry.input

    # The steps of `predict`, public so the edge runner can time each one:
    # decode (bytes -> upright RGB image) -> to_array (image -> model input) -> predict_arrays.

    def decode(self, data: bytes) -> Image.Image:
        """Image bytes -> an upright RGB image, decoded no larger than this model needs (the
        JPEG draft-size rule) and refused above `max_pixels`.

        Raises:
            ImageError: the bytes are not a usable image.
        """
        spec = self.entry.input
        return load_image(data, max_pixels=self.max_pixels, draft_size=(spec.width, spec.height))

    def to_array(self, image: Image.Image) -> np.ndarray:
        """An upright RGB image (from `decode`, or a camera frame) -> the uint8 (H, W, 3) input."""
        return to_tensor(image, self.entry.input)

    def preprocess(self, data: bytes) -> np.ndarray:
        """Image bytes -> the uint8 (H, W, 3) array this model takes (`preprocess.preprocess`)."""
        return self.to_array(self.decode(data))

    def predict_image(self, image: Image.Image, *, top_k: int | None = None) -> Prediction:
        """Classify an already decoded image (a camera frame, a `decode` result)."""
        return self.predict_arrays(self.to_array(image), top_k=top_k)[0]

    def warm_up(self) -> float:
        """One invoke on a blank input, so the first real image does not pay for the
        runtime's lazy set-up; also a smoke test of a model without a golden set.

        Returns:
            the milliseconds it took.
        """
        spec = self.entry.input
        started = time.perf_counter()
        self.predict_arrays(np.zeros((spec.height, spec.width, spec.channels), np.uint8))
        return round((time.perf_counter() - started) * 1000, 1)

    def outputs_from_arrays(
        self, arrays: np.ndarray, names: tuple[str, ...] = (LOGITS,)
    ) -> dict[str, np.ndarray]:
        """Preprocessed uint8 images (N, H, W, 3) -> the de-quantized outputs by name
        (`logits`, and `embedding` where the model has it); nothing calibrated.

        Raises:
            ModelError: the model has no output of one of those names.
        """
        arrays = np.asarray(arrays)
        if arrays.ndim == 3:
            arrays = arrays[None]
        with self._borrow() as slot:
            missing = [name for name in names if name not in slot.outputs]
            if missing:
                raise ModelError(f"model {self.version} has no output named {missing[0]!r}")
            return slot.run(arrays, names)

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        output: OutputSpec = self.entry.output
        return scoring.calibrate(raw, kind=output.kind, temperature=self.entry.temperature)

    def scores_from_arrays(self, arrays: np.ndarray) -> np.ndarray:
        """Preprocessed uint8 images (N, H, W, 3) -> calibrated probabilities (N, classes)."""
        return self._calibrate(self.outputs_from_arrays(arrays)[LOGITS])

    def scores(self, data: bytes) -> np.ndarray:
        """Calibrated class probabilities for one image, in label order."""
        return self.scores_from_arrays(self.preprocess(data))[0]

    def _prediction(
        self, probs: np.ndarray, top_k: int | None, extra: dict[str, Any]
    ) -> Prediction:
        predicted, confidence, decision = scoring.decide(
            probs, self.labels, self.entry.uncertain_threshold
        )
        return Prediction(
            predicted_class=predicted,
            confidence=round(confidence, 6),
            all_confidences=scoring.ranked(probs, self.labels, top_k),
            decision=decision,
            model_version=self.version,
            **extra,
        )

    def predict_arrays(self, arrays: np.ndarray, *, top_k: int | None = None) -> list[Prediction]:
        arrays = np.asarray(arrays)
        if arrays.ndim == 3:
            arrays = arrays[None]
        outputs = self.outputs_from_arrays(arrays, self._names)
        extras: list[dict[str, Any]] = [{} for _ in range(len(arrays))]
        if self.reference is not None:
            extras = self.reference.describe(arrays, outputs.get(EMBEDDING))
        probs = self._calibrate(outputs[LOGITS])
        return [self._prediction(p, top_k, e) for p, e in zip(probs, extras, strict=True)]

    def predict(self, data: bytes, *, top_k: int | None = None) -> Prediction:
        """Classify one encoded image.

        Raises:
            ImageError: the bytes are not a usable image (a subclass with a stable `code`).
        """
        return self.predict_arrays(self.preprocess(data), top_k=top_k)[0]

    def predict_batch(
        self,
        images: Sequence[bytes],
        *,
        top_k: int | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Classify many images with one invoke where the model has a batch dimension.

        Args:
            images: encoded images.
            top_k: keep only the K best classes in `all_confidences`.
            return_exceptions: put each bad image's `ImageError` in its slot instead of
                raising the first one, so one bad image does not fail the others.
        """
        arrays: list[np.ndarray] = []
        results: list[Any] = []
        for data in images:
            try:
                arrays.append(self.preprocess(data))
                results.append(None)
            except ImageError as exc:
                if not return_exceptions:
                    raise
                results.append(exc)
        if arrays:
            predictions = iter(self.predict_arrays(np.stack(arrays), top_k=top_k))
            results = [next(predictions) if r is None else r for r in results]
        return results

    def info(self) -> dict[str, Any]:
        """What is serving: version, sha256, labels, input spec, runtime."""
        return {
            "model_version": self.version,
            "sha256": self.entry.sha256,
            "labels": self.labels,
            "input": self.entry.input.model_dump(),
            "runtime": self.runtime.to_dict(),
        }
