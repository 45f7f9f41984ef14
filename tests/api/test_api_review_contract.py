"""The review endpoints keep their OpenAPI contract too (issue 36 §1): Schemathesis against the
app with capture on, as an admin (every answer documented, bodies match their models), and
without a key (401, documented on every operation). Seeded and bounded like
test_api_contract.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from functions.api.app import create_app
from tests.api.conftest import make_settings
from tests.api.contract_checks import image_accepted_unless_undecodable
from tests.api.review_seed import ADMIN_TOKEN, seed
from wastesort import Classifier

CONFIG = SchemathesisConfig.from_dict(
    {"seed": 36, "generation": {"deterministic": True, "database": "none", "max-examples": 25}}
)
SPEC = create_app(
    make_settings(capture_uri="unused", admin_token=ADMIN_TOKEN), load_on_startup=False
).openapi()
contract = schemathesis.openapi.from_dict(SPEC, config=CONFIG).include(path_regex="^/captures")


@pytest.fixture(scope="module")
def served(classifier: Classifier, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    root: Path = tmp_path_factory.mktemp("review") / "store"
    seed(root, list(classifier.labels))
    settings = make_settings(capture_uri=str(root), admin_token=ADMIN_TOKEN)
    return create_app(settings, classifier=classifier, load_on_startup=False)


@contract.parametrize()
@pytest.mark.parametrize("headers", [{"x-admin-token": ADMIN_TOKEN}, {}], ids=["admin", "nokey"])
def test_the_review_endpoints_keep_their_contract(
    case: schemathesis.Case, served: FastAPI, headers: dict[str, str]
):
    """Schema-valid requests may still be refused here (no key, no such capture, a label that
    is not the model's), so the acceptance checks (Schemathesis's and the predict routes' own,
    registered by contract_checks) are off; every other check runs."""
    case.call_and_validate(
        app=served,
        headers=headers,
        excluded_checks=[positive_data_acceptance, image_accepted_unless_undecodable],
    )
