"""Which file of a published version runs, and whether it may: one owner for the API, the CLI
and the bin.

A version has a CPU build and maybe an Edge TPU compile; with a fleet key its manifest entry
must carry a valid signature; its bytes must be the ones the manifest records. `choose` and
`verify_content` decide all three, so `Classifier.load` and the edge updater cannot drift
apart. The updater keeps only what is the device's own: installed files, the last known good
one, the swap.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wastesort.errors import ModelError
from wastesort.interpreter import EMBEDDING, LOGITS, output_details
from wastesort.manifest import ArtifactRef, InputSpec, ModelEntry, OutputSpec
from wastesort.runtime import load_edgetpu_delegate, make_interpreter

if TYPE_CHECKING:
    from wastesort.registry import Registry

log = logging.getLogger(__name__)

EDGETPU = "edgetpu"
"""The delegate and the `extra_artifacts` key of the Coral Edge TPU compile."""

PublicKey = bytes | str | Path


@dataclass(frozen=True)
class Choice:
    """A version and the build of it that will run on this machine."""

    entry: ModelEntry
    variant: str | None = None
    """`edgetpu`, or None for the CPU build."""

    @property
    def ref(self) -> ArtifactRef:
        return self.entry.extra_artifacts[self.variant] if self.variant else self.entry.artifact

    @property
    def delegate(self) -> str | None:
        return EDGETPU if self.variant == EDGETPU else None


def check_signature(entry: ModelEntry, public_key: PublicKey | None) -> None:
    """With a key, the entry must be signed by it; without one nothing is checked.

    Raises:
        SignatureError: unsigned, or signed by another key, or changed since signing.
    """
    if public_key is None:
        return
    from wastesort.signing import verify  # noqa: PLC0415 (cryptography, only with a key)

    verify(entry, public_key)


def variant_for(entry: ModelEntry, delegate: str | None) -> str | None:
    """The build to run: the Edge TPU compile when asked for, published and a Coral answers;
    otherwise the CPU build (the reason is logged)."""
    if delegate != EDGETPU:
        return None
    if EDGETPU not in entry.extra_artifacts:
        log.warning("model %s has no Edge TPU build; it runs on the CPU", entry.version)
        return None
    if load_edgetpu_delegate() is None:  # logs why, once
        log.warning("model %s runs on the CPU (no Edge TPU device)", entry.version)
        return None
    return EDGETPU


def choose(
    entry: ModelEntry, *, delegate: str | None = None, public_key: PublicKey | None = None
) -> Choice:
    """Check the entry's signature (with a key) and pick the build to run.

    Raises:
        SignatureError: see `check_signature`.
    """
    check_signature(entry, public_key)
    return Choice(entry, variant_for(entry, delegate))


def fetch(registry: Registry, choice: Choice) -> bytes:
    """The chosen build's bytes, downloaded (or cached) and verified against the manifest."""
    _, content = registry.fetch_content(choice.ref)
    return content


def verify_content(content: bytes, choice: Choice, *, public_key: PublicKey | None = None) -> None:
    """Bytes kept elsewhere (a device's disk) are still the version's: size, sha256, signature.

    Raises:
        IntegrityError, SignatureError.
    """
    from wastesort.registry import verify_bytes  # noqa: PLC0415 (keeps this module light)

    verify_bytes(content, choice.ref)
    check_signature(choice.entry, public_key)


def read_model_file(path: Path) -> bytes:
    """A bare `.tflite` file's bytes; a missing file is a `ModelError`, not an OSError."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"no model file at {path}", code="not_found") from None


def version_stem(stem: str) -> str:
    """A file name made fit for a version id (letters, digits, '.', '_', '-')."""
    cleaned = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", stem))
    return cleaned.strip("._-")[:100] or "model"


def entry_for_file(path: Path, content: bytes, labels: Sequence[str] | None) -> ModelEntry:
    """A manifest entry for a `.tflite` outside any registry, read off the model itself."""
    if labels is None:
        candidates = [path.with_suffix(".labels.txt"), path.parent / "labels.txt"]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise ModelError(
                f"{path}: no labels (put them one per line in {candidates[0].name} or "
                "labels.txt beside the model, or pass labels=...)"
            )
        labels = [line.strip() for line in found.read_text().splitlines() if line.strip()]
    interpreter, _ = make_interpreter(content, num_threads=1)
    inp = interpreter.get_input_details()[0]
    named = output_details(interpreter)  # the logits by name where there are several
    outputs = {name: _output_spec(name, details) for name, details in named.items()}
    digest = hashlib.sha256(content).hexdigest()
    _, height, width, _ = (int(v) for v in inp["shape"])
    return ModelEntry(
        version=f"{version_stem(path.stem)}-{digest[:8]}",
        artifact=ArtifactRef(path=path.name, sha256=digest, size=len(content)),
        labels=list(labels),
        input=InputSpec(
            height=height,
            width=width,
            dtype=np.dtype(inp["dtype"]).name,
            scale=float(inp["quantization"][0]) or 1.0,
            zero_point=int(inp["quantization"][1]),
        ),
        output=outputs[LOGITS],
        outputs=outputs if len(outputs) > 1 else None,
    )


def _output_spec(name: str, details: dict) -> OutputSpec:
    return OutputSpec(
        kind="embedding" if name == EMBEDDING else "logits",
        dtype=np.dtype(details["dtype"]).name,
        scale=float(details["quantization"][0]) or 1.0,
        zero_point=int(details["quantization"][1]),
    )
