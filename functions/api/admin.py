"""Who may review captures: the admin check in front of `/captures` (functions/api/review.py).

API Gateway meters callers by API key but cannot tell one key from another for authorisation,
so the app decides: behind API Gateway a request is an admin's when the id of the key it came
with (`requestContext.identity.apiKeyId`, in the event Mangum puts in `scope["aws.event"]`) is
one of `API_ADMIN_KEY_IDS`. Where no gateway is in front (`make demo`), a configured
`API_ADMIN_TOKEN` sent as `x-admin-token`, `Authorization: Bearer ...` or `x-api-key` stands in
for the admin key. No credential at all: 401; a caller's key or a wrong token: 403. The check
never logs or stores a key: only whether it passed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request

from functions.api.problems import Problem

if TYPE_CHECKING:
    from functions.api.settings import Settings

TOKEN_HEADERS = ("x-admin-token", "x-api-key")


def gateway_key_id(request: Request) -> str | None:
    """The API Gateway key id this request came with, or None (no gateway, or no key)."""
    event = request.scope.get("aws.event") or {}
    identity = (event.get("requestContext") or {}).get("identity") or {}
    key_id = identity.get("apiKeyId")
    return str(key_id) if key_id else None


def presented_token(request: Request) -> str | None:
    """A token sent in one of `TOKEN_HEADERS` or as `Authorization: Bearer`."""
    for name in TOKEN_HEADERS:
        if value := request.headers.get(name):
            return value
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def is_admin(settings: Settings, request: Request) -> bool | None:
    """True: an admin; False: a credential that is not an admin's; None: no credential."""
    key_id = gateway_key_id(request)
    token = presented_token(request)
    if key_id is not None and key_id in settings.admin_key_ids:
        return True
    expected = settings.admin_token.get_secret_value() if settings.admin_token else None
    if token is not None and expected and hmac.compare_digest(token.encode(), expected.encode()):
        return True
    if key_id is None and token is None:
        return None
    return False


def require_admin(settings: Settings) -> Callable[[Request], Any]:
    """A FastAPI dependency: pass an admin, refuse anyone else as a problem."""

    async def check(request: Request) -> None:
        verdict = is_admin(settings, request)
        if verdict is None:
            raise Problem(
                "unauthorized",
                "send the admin key (x-api-key behind API Gateway, x-admin-token locally)",
            )
        if not verdict:
            raise Problem("forbidden", "this key is not an admin key; reviewing needs one")

    return check


ADMIN_PROBLEMS = (
    ("unauthorized", "send the admin key (x-api-key behind API Gateway, x-admin-token locally)"),
    ("forbidden", "this key is not an admin key; reviewing needs one"),
)
"""The problems every admin route may answer, for its OpenAPI `responses`."""
