"""Request bodies -> checked images: multipart uploads, raw `image/*` bodies, JSON base64 or URLs.

Each image is checked twice before the core decodes it: its declared content type must be one
we serve (JPEG, PNG, WebP) and its first bytes must carry that format's signature, so a PNG
declared as JPEG, or a script declared as an image, is refused with a precise problem. The
parsers hand the routes only `CheckedImage`s (in a batch, each bad image's `Problem` instead),
so no route can forget a check.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from annotated_types import Ge
from fastapi import Request
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from functions.api.problems import Problem

if TYPE_CHECKING:
    from functions.api.fetch import Fetcher

SERVED_TYPES = ("image/jpeg", "image/png", "image/webp")
ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
UNTYPED = ("application/octet-stream", "binary/octet-stream")
"""Declared by clients that do not know (curl without `;type=`, S3 defaults): sniff only."""


# --- the JSON bodies (their fields are the OpenAPI schema's; schemas.py shapes the oneOf) ----

IMAGE_KINDS = ("image_base64", "image_url")
"""The keys that carry an image in JSON; a body (or batch item) has exactly one of them."""


def _json_integer(value: Any) -> Any:
    """A JSON integer as JSON Schema counts them (`3` or `3.0`), never `true` or `"3"`."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


TopK = Annotated[int, Ge(1), BeforeValidator(_json_integer)]
TOP_K_DESCRIPTION = "keep the K best classes (default: all)"


class ImageRef(BaseModel):
    """One image, inline as base64 (a `data:` URL is fine) or by an https URL: exactly one of
    the two keys, its value a string (the OpenAPI schema says the same with a `oneOf`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image_base64: str | None = Field(
        default=None,
        description="the image, base64 (standard or URL-safe, wrapped lines and "
        "`data:image/...;base64,` URLs are fine)",
    )
    image_url: str | None = Field(
        default=None, description="an https URL on this deployment's allow-list"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageRef:
        given = [kind for kind in IMAGE_KINDS if kind in self.model_fields_set]
        if len(given) != 1 or getattr(self, given[0]) is None:
            raise ValueError("give exactly one of image_base64 and image_url, as a string")
        return self


class PredictRequest(ImageRef):
    top_k: TopK | None = Field(default=None, description=TOP_K_DESCRIPTION)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    images: list[ImageRef] = Field(min_length=1)
    top_k: TopK | None = Field(default=None, description=TOP_K_DESCRIPTION)


# --- one image, before the core sees it ------------------------------------------------------


@dataclass(frozen=True)
class CheckedImage:
    """Bytes whose declared type is served and whose signature matches: what the core decodes.

    Attributes:
        data: the image bytes.
        media_type: the format the signature says (`image/jpeg`, `image/png`, `image/webp`).
        source: where it came from (`body`, the file name, `images[2]`, the fetched URL).
    """

    data: bytes
    media_type: str
    source: str


@dataclass
class _Candidate:
    """An image as the request gave it, not yet checked, or the problem that stopped it."""

    data: bytes = b""
    declared_type: str | None = None
    source: str = "body"
    problem: Problem | None = None

    def check(self) -> CheckedImage:
        if self.problem is not None:
            raise self.problem
        detected = check_image(self.data, self.declared_type)
        return CheckedImage(self.data, detected, self.source)

    def check_or_problem(self) -> CheckedImage | Problem:
        try:
            return self.check()
        except Problem as problem:
            return problem


def sniff(data: bytes) -> str | None:
    """The served format the bytes' signature says, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def media_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    base = content_type.split(";", 1)[0].strip().lower()
    return ALIASES.get(base, base) or None


def check_image(data: bytes, declared: str | None) -> str:
    """Refuse what is not a served image by declared type and by signature.

    Returns:
        the served media type the signature says.

    Raises:
        Problem: empty-image, unsupported-media-type, not-an-image, content-type-mismatch.
    """
    declared = media_type(declared)
    if declared is not None and declared not in SERVED_TYPES and declared not in UNTYPED:
        raise Problem(
            "unsupported-media-type",
            f"{declared} is not served; send {', '.join(SERVED_TYPES)}",
            accepted=list(SERVED_TYPES),
        )
    if not data:
        raise Problem("empty-image", "the image is empty (0 bytes)")
    actual = sniff(data)
    if actual is None:
        raise Problem("not-an-image", "the bytes are not a JPEG, PNG or WebP image")
    if declared in SERVED_TYPES and declared != actual:
        raise Problem(
            "content-type-mismatch",
            f"declared {declared} but the bytes are {actual}",
            declared=declared,
            detected=actual,
        )
    return actual


def decode_base64(text: str) -> tuple[bytes, str | None]:
    """base64 (standard or URL-safe, wrapped lines allowed, or a `data:` URL) -> bytes and
    the media type a data URL declares."""
    declared = None
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise Problem("invalid-base64", "a data: URL must be `data:<type>;base64,<data>`")
        declared = header[5:].removesuffix(";base64") or None
    compact = "".join(text.split())
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4) if len(compact) % 4 != 1 else ""
    try:
        return base64.b64decode(compact, validate=True), declared
    except (binascii.Error, ValueError):
        raise Problem("invalid-base64", "image_base64 is not valid base64") from None


# --- reading requests ------------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `limit` (not after buffering it).

    The body is cached on the request, so `request.form()` parses it afterwards.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem("payload-too-large", f"the body is over {limit:,} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem("payload-too-large", f"the body is over {limit:,} bytes", limit=limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's form() reads the cached body
    return body


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError covers decode and int-size errors
        raise Problem("malformed-request", f"the body is not valid JSON: {exc}") from None


def _top_k(value: Any) -> int | None:
    """`top_k` from a query string or a form field: absent is None; anything but a positive
    decimal integer, the empty string included, is refused (the schema says `integer >= 1`)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else ""  # a file in the `top_k` field is not one
    try:
        top_k = int(text) if text.isascii() and text.isdigit() else 0
    except ValueError:  # more digits than int() reads
        top_k = 0
    if top_k < 1:
        raise Problem("validation-error", "top_k must be a positive integer")
    return top_k


async def _form(request: Request, max_files: int) -> Any:
    try:
        return await request.form(max_files=max_files, max_fields=16)
    except (HTTPException, MultiPartException) as exc:
        detail = str(getattr(exc, "detail", None) or getattr(exc, "message", exc))
        if "Too many files" in detail:
            raise Problem("too-many-images", detail, limit=max_files) from None
        raise Problem("malformed-request", f"the multipart body: {detail}") from None


async def _upload(item: Any, field: str) -> _Candidate:
    """An uploaded file, not yet checked. A text part where a file belongs is the request's
    shape, not an image's content: the whole request is refused (422), even in a batch."""
    if not isinstance(item, UploadFile):
        raise Problem("validation-error", f"multipart field {field!r} must be a file, not text")
    data = await item.read()
    return _Candidate(data, item.headers.get("content-type"), item.filename or field)


async def _from_ref(ref: ImageRef, fetcher: Fetcher, index: int | None = None) -> _Candidate:
    where = "image_base64" if index is None else f"images[{index}]"
    try:
        if ref.image_base64 is not None:
            data, declared = decode_base64(ref.image_base64)
            return _Candidate(data, declared, where)
        fetched = await fetcher.fetch(ref.image_url or "")
        return _Candidate(fetched.data, fetched.content_type, fetched.url)
    except Problem as problem:
        return _Candidate(source=where, problem=problem)


def _kind_of_body(request: Request) -> str:
    declared = media_type(request.headers.get("content-type"))
    if declared == "multipart/form-data":
        return "multipart"
    if declared == "application/json" or (declared or "").endswith("+json"):
        return "json"
    if declared is None or declared.startswith("image/") or declared in UNTYPED:
        return "raw"
    raise Problem(
        "unsupported-media-type",
        f"a {declared} body is not accepted; send multipart/form-data, image/* or JSON",
    )


async def parse_single(
    request: Request, *, limit: int, fetcher: Fetcher
) -> tuple[CheckedImage, int | None]:
    """The one image of a `/predict` request, checked, and its `top_k`.

    Raises:
        Problem: the body gives no image, or the image is not one we serve.
    """
    kind = _kind_of_body(request)
    body = await read_body(request, limit)
    top_k = _top_k(request.query_params.get("top_k"))
    if kind == "raw":
        return _Candidate(body, request.headers.get("content-type"), "body").check(), top_k
    if kind == "multipart":
        form = await _form(request, max_files=1)
        try:
            if "file" not in form:
                raise Problem("validation-error", "the multipart body has no `file` field")
            image = await _upload(form["file"], "file")
            top_k = _top_k(form.get("top_k")) or top_k
            return image.check(), top_k
        finally:
            await form.close()
    try:
        parsed = PredictRequest.model_validate(_json(body))
    except ValidationError as exc:
        raise Problem.from_validation(exc) from None
    image = await _from_ref(parsed, fetcher)
    return image.check(), parsed.top_k or top_k


async def parse_batch(
    request: Request, *, limit: int, batch_max: int, fetcher: Fetcher
) -> tuple[list[CheckedImage | Problem], int | None]:
    """The images of a `/predict/batch` request, in order: each checked, or its own problem
    (one bad image does not fail the others).

    Raises:
        Problem: the body as a whole cannot be read as a batch.
    """
    import asyncio  # noqa: PLC0415

    kind = _kind_of_body(request)
    if kind == "raw":
        raise Problem("unsupported-media-type", "a batch is multipart (`files`) or JSON (`images`)")
    body = await read_body(request, limit)
    top_k = _top_k(request.query_params.get("top_k"))
    if kind == "multipart":
        form = await _form(request, max_files=batch_max)
        try:
            uploads = form.getlist("files")
            if not uploads:
                raise Problem("validation-error", "the multipart body has no `files` field")
            images = [await _upload(item, "files") for item in uploads]
            top_k = _top_k(form.get("top_k")) or top_k
            return [image.check_or_problem() for image in images], top_k
        finally:
            await form.close()
    raw = _json(body)
    images_raw = raw.get("images") if isinstance(raw, dict) else None
    if isinstance(images_raw, list) and len(images_raw) > batch_max:
        raise Problem("too-many-images", f"at most {batch_max} images", limit=batch_max)
    try:
        parsed = BatchRequest.model_validate(raw)
    except ValidationError as exc:
        raise Problem.from_validation(exc) from None
    if any(ref.image_url is not None for ref in parsed.images):
        fetcher.require_enabled()  # a deployment without URL input refuses the whole batch
    images = await asyncio.gather(
        *(_from_ref(ref, fetcher, i) for i, ref in enumerate(parsed.images))
    )
    return [image.check_or_problem() for image in images], parsed.top_k or top_k
