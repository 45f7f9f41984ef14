"""Classify photos with the wastesort API from Python (httpx).

    python docs/examples/client.py samples/glass/glass51.jpg [more ...] \
        [--url http://127.0.0.1:8000] [--api-key KEY] [--top-k 3] [--batch]

Prints one JSON object per image. On AWS the URL is the API Gateway stage URL and the key is
sent as `x-api-key`. tests/api/test_api_docs.py runs this file against the app.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
from pathlib import Path
from typing import Any

import httpx


class ProblemError(Exception):
    """An `application/problem+json` answer; `type` says which kind (see docs/api.md)."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(f"{problem.get('title')}: {problem.get('detail')} ({problem['type']})")
        self.problem = problem


def _answer(response: httpx.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        raise ProblemError(response.json())
    response.raise_for_status()
    return response.json()


def _part(path: Path, field: str) -> tuple[str, tuple[str, bytes, str]]:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return field, (path.name, path.read_bytes(), kind)


def classify(client: httpx.Client, path: Path, top_k: int | None = None) -> dict[str, Any]:
    """One photo as a multipart upload -> `predicted_class`, `confidence`, `decision`, ..."""
    params = {"top_k": top_k} if top_k else None
    return _answer(client.post("/predict", files=[_part(path, "file")], params=params))


def classify_batch(client: httpx.Client, paths: list[Path]) -> list[dict[str, Any]]:
    """Several photos in one request; each result has its own `status` (and `problem`)."""
    return _answer(client.post("/predict/batch", files=[_part(p, "files") for p in paths]))[
        "results"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", help="sent as x-api-key (API Gateway)")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--batch", action="store_true", help="one /predict/batch request")
    args = parser.parse_args(argv)
    headers = {"x-api-key": args.api_key} if args.api_key else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
        if args.batch:
            for path, result in zip(args.images, classify_batch(client, args.images), strict=True):
                print(json.dumps({"path": str(path), **result}))
            return 0
        failed = 0
        for path in args.images:
            try:
                print(json.dumps({"path": str(path), **classify(client, path, args.top_k)}))
            except ProblemError as problem:
                failed += 1
                print(json.dumps({"path": str(path), "problem": problem.problem}))
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
