"""The two pages in a real browser (issue 36 §3): headless Chromium from Debian, driven by
Playwright, against the app served by uvicorn exactly as `make serve` serves it.

Skipped, with the reason in the summary, where `/usr/bin/chromium` is missing (`.ci/run`
installs it with apt) or Playwright is not installed. Screenshots go to a temporary folder, or
to `WASTESORT_SCREENSHOTS` (`make screenshots` sets `docs/img`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.api.app import create_app
from functions.api.server import serving
from tests.api.conftest import make_settings
from tests.api.review_seed import ADMIN_TOKEN, seed, seed_samples
from tests.conftest import SAMPLES
from wastesort import Classifier
from wastesort.capture import CaptureStore
from wastesort.classifier import default_model_uri

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1100, "height": 760}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="browser tests need Chromium at /usr/bin/chromium "
        "(`apt-get install -y chromium`, as .ci/run does)",
    ),
]
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="browser tests need Playwright (the dev extra)"
)


@pytest.fixture(scope="module")
def model() -> Classifier:
    """The bundled model: the screenshots show real answers on real photos."""
    return Classifier.load(default_model_uri())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def serve(model: Classifier, tmp_path: Path) -> Iterator[Any]:
    """Serve the app with capture on into `tmp_path/store`; yields (base URL, store root)."""
    root = tmp_path / "store"
    settings = make_settings(capture_uri=str(root), capture_sample=0.0, admin_token=ADMIN_TOKEN)
    app = create_app(settings, classifier=model, load_on_startup=False)
    with serving(app, access_log=False) as url:
        yield url, root


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("WASTESORT_SCREENSHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def open_review(browser: Any, url: str, key: str) -> Any:
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{url}/review")
    page.get_by_label("Admin key").fill(key)
    page.get_by_role("button", name="Use key").click()
    return page


def test_a_photo_on_the_try_it_page_shows_its_class(
    browser: Any, serve: Any, model: Classifier, shots: Path
):
    url, _ = serve
    photo = SAMPLES / "glass" / "glass51.jpg"
    expected = model.predict(photo.read_bytes())
    page = browser.new_page(viewport=PHONE, device_scale_factor=2)
    page.goto(url)
    for _ in range(3):  # skip link, the two nav links: each shows where the focus is
        page.keyboard.press("Tab")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("", "none"), page.evaluate("document.activeElement.outerHTML")
    page.get_by_label("Take or choose a photo").set_input_files(str(photo))
    sync_api.expect(page.locator("#decision")).to_have_text(expected.decision.replace("_", " "))
    sync_api.expect(page.locator("#meta")).to_contain_text(expected.model_version)
    assert page.locator("#bars li").count() == len(model.labels)
    page.get_by_label("This was actually…").select_option("glass")
    page.get_by_role("button", name="Send").click()
    sync_api.expect(page.locator("#status")).to_contain_text("recorded as glass")
    page.screenshot(path=str(shots / "try-it.png"), full_page=True)
    page.close()


def test_three_captures_labelled_with_the_keyboard(
    browser: Any, serve: Any, model: Classifier, shots: Path
):
    url, root = serve
    photos = sorted(SAMPLES.glob("*/*.jpg"))
    ids = seed_samples(root, model, photos)
    page = open_review(browser, url, ADMIN_TOKEN)
    card = page.locator("#card")
    sync_api.expect(card).to_be_visible()
    sync_api.expect(page.locator("#progress")).to_contain_text(f"of {len(ids)}")
    page.wait_for_function("document.getElementById('photo').naturalWidth > 0")
    page.screenshot(path=str(shots / "review.png"), full_page=True)
    labels = [*model.labels, "not_waste"]
    labelled = []
    for key in ("2", "5", "0"):
        before = card.get_attribute("data-capture-id")
        page.keyboard.press(key)
        sync_api.expect(card).not_to_have_attribute("data-capture-id", before)
        labelled.append((before, labels[int(key) - 1] if key != "0" else "not_waste"))
    page.keyboard.press("s")  # a skip writes nothing
    sync_api.expect(page.locator("#progress")).to_contain_text("3 labelled, 1 skipped")
    store = CaptureStore.from_uri(str(root))
    for capture_id, label in labelled:
        assert [(e.label, e.source) for e in store.labels(capture_id)] == [(label, "review")]
    assert sum(len(v) for v in store.all_labels().values()) == 3
    page.close()


def test_a_callers_key_is_refused_on_the_review_endpoints(browser: Any, serve: Any):
    url, root = serve
    capture_id = seed(root, ["glass", "metal"], uncertain=1, sampled=0, disagreed=0)["uncertain"][0]
    page = open_review(browser, url, "a-callers-key")
    sync_api.expect(page.locator("#status")).to_contain_text("not an admin key")
    assert page.locator("#card").is_hidden()
    statuses = page.evaluate(
        """async (id) => {
            const headers = {"x-api-key": "a-callers-key", "content-type": "application/json"};
            const calls = [
                fetch("captures", {headers}),
                fetch(`captures/${id}/image`, {headers}),
                fetch(`captures/${id}/label`, {method: "PUT", headers, body: '{"label":"glass"}'}),
            ];
            return (await Promise.all(calls)).map(
                (r) => [r.status, r.headers.get("content-type")]);
        }""",
        capture_id,
    )
    assert statuses == [[403, "application/problem+json"]] * 3
    assert not CaptureStore.from_uri(str(root)).all_labels()
    page.close()


def test_time_to_label_fifty_captures_with_the_keyboard(
    browser: Any, serve: Any, capsys: pytest.CaptureFixture[str]
):
    url, root = serve
    ids = seed(
        root,
        ["cardboard", "glass", "metal", "paper", "plastic", "trash"],
        uncertain=50,
        sampled=0,
        disagreed=0,
    )["uncertain"]
    page = open_review(browser, url, ADMIN_TOKEN)
    card = page.locator("#card")
    sync_api.expect(card).to_have_attribute("data-capture-id", ids[0])
    started = time.perf_counter()
    for n in range(50):
        page.keyboard.press(str(n % 6 + 1))
        if n < 49:
            sync_api.expect(card).to_have_attribute("data-capture-id", ids[n + 1])
    sync_api.expect(page.locator("#progress")).to_contain_text("Nothing left to review")
    seconds = time.perf_counter() - started
    assert len(CaptureStore.from_uri(str(root)).all_labels()) == 50
    with capsys.disabled():
        print(
            f"\nlabelled 50 captures with the keyboard in {seconds:.2f} s "
            f"({seconds / 50 * 1000:.0f} ms each)"
        )
    page.close()
