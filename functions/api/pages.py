"""The two web pages: `/` (try the classifier with a photo) and `/review` (label captures).

Static HTML, JavaScript and CSS from `functions/api/pages/`, served as they are: no framework,
no build step. The pages are public (a browser sends no `x-api-key` on navigation; infra makes
`GET /`, `GET /review` and `/static/*` keyless routes); their scripts send the key the person
types once (kept in session storage) with every API call, where the usual checks apply. The
pages load nothing from elsewhere, so a strict Content-Security-Policy holds.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

PAGES = Path(__file__).resolve().parent / "pages"
STATIC_PREFIX = "/static"
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; "
        "style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((PAGES / name).read_text(encoding="utf-8"), headers=SECURITY_HEADERS)


def add_pages(app: FastAPI) -> None:
    """`GET /`, `GET /review` and the assets under `/static/`; none in the OpenAPI document."""
    routes = APIRouter(include_in_schema=False)

    @routes.get("/", response_class=HTMLResponse)
    async def try_it() -> HTMLResponse:
        return _page("index.html")

    @routes.get("/review", response_class=HTMLResponse)
    async def review() -> HTMLResponse:
        return _page("review.html")

    app.include_router(routes)
    app.mount(STATIC_PREFIX, StaticFiles(directory=PAGES), name="static")
