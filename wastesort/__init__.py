"""wastesort: classify a photo of waste into its bin with one int8 TFLite model.

The package's names are loaded on first use (PEP 562), so `import wastesort.drift` or
`wastesort.fleet` costs only what those modules import: the drift Lambda ships numpy, not
Pillow or the TFLite runtime, and its cold start does not pay for them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wastesort.classifier import Classifier, Prediction
    from wastesort.errors import ImageError, ModelError, WastesortError
    from wastesort.scoring import UNCERTAIN

__all__ = ["UNCERTAIN", "Classifier", "ImageError", "ModelError", "Prediction", "WastesortError"]
__version__ = "0.1.0"

_LAZY = {
    "Classifier": "wastesort.classifier",
    "Prediction": "wastesort.classifier",
    "ImageError": "wastesort.errors",
    "ModelError": "wastesort.errors",
    "WastesortError": "wastesort.errors",
    "UNCERTAIN": "wastesort.scoring",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access; submodules import as usual."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wastesort' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
