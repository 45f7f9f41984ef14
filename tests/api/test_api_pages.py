"""The two pages as files (issue 36 §1): served at `/` and `/review` with their assets, public,
under a strict Content-Security-Policy, and not in the OpenAPI document. The browser tests
(tests/api/test_api_pages_browser.py) drive them for real."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from functions.api.pages import PAGES


def test_pages_and_assets_are_served_without_a_key(client: TestClient):
    for path in ("/", "/review"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        for asset in re.findall(r'(?:src|href)="(static/[^"]+)"', response.text):
            assert client.get(f"/{asset}").status_code == 200, asset
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/review" not in paths


def test_every_control_has_a_label():
    for page in ("index.html", "review.html"):
        html = (PAGES / page).read_text()
        ids = re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', html)
        assert ids, page
        for control in ids:
            assert f'for="{control}"' in html, (page, control)


def test_the_phone_camera_and_the_viewport():
    html = (PAGES / "index.html").read_text()
    assert 'capture="environment"' in html and 'name="viewport"' in html
