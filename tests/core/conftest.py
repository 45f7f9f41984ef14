"""Core tests can run in the Pi-like venv (tflite-runtime, numpy 1.x, no TensorFlow) on models
the main venv built: WASTESORT_TINY_MODELS names the folder `tests/tiny_model.py` wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models (see tests/conftest.py), prebuilt where WASTESORT_TINY_MODELS says."""
    prebuilt = os.environ.get("WASTESORT_TINY_MODELS")
    if prebuilt and (Path(prebuilt) / "named" / "tiny_int8.tflite").exists():
        return Path(prebuilt)
    out = tmp_path_factory.mktemp("tiny")
    script = ROOT / "tests" / "tiny_model.py"
    subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True)
    return out
