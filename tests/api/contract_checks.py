"""The one Schemathesis check this API needs beyond the built-in ones.

Schemathesis's `positive_data_acceptance` expects every schema-valid request to be accepted.
An image API cannot promise that: `{"type": "string", "format": "binary"}` (or a base64
string) says nothing of whether the bytes decode as a JPEG, PNG or WebP, and no JSON Schema
can. `image_accepted_unless_undecodable` keeps the rule for everything else: a schema-valid
request is answered 2xx, or refused only because of its image's bytes (`IMAGE_CONTENT`) or the
deployment's body size limit (413). A 400 `url-input-disabled` or a 422 `validation-error`
for schema-valid data fails it, as it should.

Used by `test_api_contract.py`, and by the Schemathesis CLI against a running server:

    PYTHONPATH=. SCHEMATHESIS_HOOKS=tests.api.contract_checks schemathesis run \\
        http://127.0.0.1:8093/openapi.json --checks all \\
        --exclude-checks positive_data_acceptance
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.generation.meta import REQUEST_SHAPE_PROBES, coverage_scenario

from functions.api.problems import PROBLEM_BASE

IMAGE_CONTENT = frozenset(
    {
        "empty-image",
        "not-an-image",
        "corrupt-image",
        "too-many-pixels",
        "invalid-base64",
        "content-type-mismatch",
        # where URL input is on: what a host resolves to and answers is not the schema's either
        "url-not-allowed",
        "url-fetch-failed",
    }
)
"""Problems about the bytes of a schema-valid image (or what is behind its URL): what a
schema cannot rule out."""


@schemathesis.check
def image_accepted_unless_undecodable(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """Schema-valid data is accepted, or refused only for its image's bytes or its size."""
    if coverage_scenario(case) in REQUEST_SHAPE_PROBES:
        return None  # a request malformed on purpose (as the built-in check skips it)
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status >= 500 or status == 413:
        return None
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    kind = str(body.get("type", "")) if isinstance(body, dict) else ""
    if kind.removeprefix(PROBLEM_BASE) in IMAGE_CONTENT:
        return None
    raise AssertionError(
        f"schema-valid request refused with {status} {kind or '(not a problem)'}: "
        f"{(body or {}).get('detail') if isinstance(body, dict) else response.text[:200]}"
    )
