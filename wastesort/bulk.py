"""Bulk classification: one JSON record per image, shared by the CLI and the batch Lambda.

`to_record` is the one shape of a classified (or refused) image; the local pool and the cloud
batch handler both write it, so a results file reads the same wherever it was made.
"""

from __future__ import annotations

from typing import Any

from wastesort.errors import WastesortError


def to_record(path: str, outcome: Any) -> dict[str, Any]:
    """`{"path", <prediction fields>}` or `{"path", "error": {"code", "message"}}`.

    `outcome` is a `Prediction` or the `WastesortError` (or `OSError`) that refused the image.
    """
    if isinstance(outcome, WastesortError):
        return {"path": path, "error": {"code": outcome.code, "message": outcome.message}}
    if isinstance(outcome, OSError):
        message = outcome.strerror or str(outcome)
        return {"path": path, "error": {"code": "unreadable", "message": message}}
    return {"path": path, **outcome.to_dict()}
