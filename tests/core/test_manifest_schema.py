"""Manifest schema 2 without stranding the fleet: written as 1 unless something needs 2, read
as 1 or 2 here, and refused clearly by today's schema-1-only reader (pinned as a fixture)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.conftest import LABELS, ROOT, tiny_fields
from tests.core.test_cli import cli
from wastesort import Classifier, reference
from wastesort.errors import ManifestError, UnsupportedSchemaError
from wastesort.manifest import Manifest, ModelEntry, OutputSpec, Rollout
from wastesort.registry import Registry

PINNED = Path(__file__).parent / "fixtures" / "manifest_v1.py"


@pytest.fixture(scope="module")
def old_reader() -> ModuleType:
    """Today's reader (schema 1 only), loaded beside the new one under another name."""
    name = "wastesort_manifest_v1_pinned"
    spec = importlib.util.spec_from_file_location(name, PINNED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[name]


def _named_outputs() -> dict[str, OutputSpec]:
    return {
        "logits": tiny_fields()["output"],
        "embedding": OutputSpec(kind="embedding", dtype="int8", scale=0.01, zero_point=-128),
    }


def test_bundled_manifest_reads_and_writes_back_unchanged_as_schema_2(old_reader: ModuleType):
    """The bundled production model embeds (it carries a reference file), so the bundled
    registry is schema 2: today's reader refuses it clearly, the older entries keep their
    schema-1 signatures."""
    raw = (ROOT / "models" / "manifest.json").read_bytes()
    manifest = Manifest.parse(raw)
    assert manifest.dumps() == raw
    production = manifest.resolve("production")
    assert manifest.schema_needs() == {f"version {production.version}": ["outputs", "reference"]}
    assert production.reference is not None
    with pytest.raises(old_reader.UnsupportedSchemaError, match="schema_version 2 is not"):
        old_reader.Manifest.parse(raw)
    for entry in manifest.versions.values():  # signatures over schema-1 entries stay valid
        if entry.version != production.version:
            assert {"outputs", "reference"}.isdisjoint(json.loads(entry.signing_payload()))


def test_one_output_publish_keeps_a_schema_1_registry_schema_1(
    registry_dir: Path, tiny_int8: Path, old_reader: ModuleType
):
    registry = Registry.from_uri(registry_dir)
    registry.publish(tiny_int8, version="tiny-2", aliases=["production"], **tiny_fields())
    raw = (registry_dir / "manifest.json").read_bytes()
    assert json.loads(raw)["schema_version"] == 1
    assert "outputs" not in raw.decode() and "rollout" not in raw.decode()
    old = old_reader.Manifest.parse(raw)  # a device on today's release still updates
    assert old.resolve("production").version == "tiny-2"


def test_two_output_publish_needs_schema_2_which_the_old_reader_refuses_clearly(
    registry_dir: Path, tiny_models: Path, old_reader: ModuleType, tmp_path: Path
):
    registry = Registry.from_uri(registry_dir, cache_dir=tmp_path / "c")
    registry.publish(
        tiny_models / "named" / "tiny_int8.tflite",
        version="tiny-2",
        outputs=_named_outputs(),
        **tiny_fields(),
    )
    raw = (registry_dir / "manifest.json").read_bytes()
    manifest = Manifest.parse(raw)
    assert manifest.schema_version == 2
    assert manifest.schema_needs() == {"version tiny-2": ["outputs"]}
    with pytest.raises(old_reader.UnsupportedSchemaError, match="schema_version 2 is not"):
        old_reader.Manifest.parse(raw)
    # This release reads both entries of the schema-2 manifest.
    assert Classifier.load(f"{registry_dir}@tiny-1", cache_dir=tmp_path / "c").version == "tiny-1"
    two = Classifier.load(f"{registry_dir}@tiny-2", cache_dir=tmp_path / "c")
    assert set(two.entry.outputs or {}) == {"logits", "embedding"}


def test_rollout_on_an_alias_is_schema_2_and_dropping_it_goes_back_to_1(registry_dir: Path):
    registry = Registry.from_uri(registry_dir)

    def start(manifest: Manifest) -> None:
        manifest.aliases["production"].rollout = Rollout(percent=10, cohorts=["north"])

    assert registry.update(start).schema_version == 2
    assert registry.manifest().aliases["production"].rollout == Rollout(
        percent=10, cohorts=["north"]
    )

    def stop(manifest: Manifest) -> None:
        manifest.aliases["production"].rollout = None

    registry.update(stop)
    assert json.loads((registry_dir / "manifest.json").read_bytes())["schema_version"] == 1


@pytest.mark.parametrize("found", [0, 3, 99, "2", True, None])
def test_unknown_schemas_are_refused(found: object):
    with pytest.raises(UnsupportedSchemaError, match="reads versions 1, 2"):
        Manifest.parse(json.dumps({"schema_version": found}))


def test_outputs_must_name_logits_and_agree_with_output():
    fields = {"version": "v", "artifact": {"path": "m", "sha256": "0" * 64, "size": 1}}
    base = {**fields, "labels": LABELS, "input": {"height": 4, "width": 4}}
    with pytest.raises(ValueError, match="'logits'"):
        ModelEntry.model_validate({**base, "outputs": {"embedding": {"kind": "embedding"}}})
    with pytest.raises(ValueError, match="same as output"):
        ModelEntry.model_validate({**base, "outputs": {"logits": {"dtype": "int8"}}})
    with pytest.raises(ManifestError):
        Manifest.parse(json.dumps({"schema_version": 1, "versions": {"v": {**base, "x": 1}}}))


def test_registry_show_says_which_schema_and_what_forces_it(
    registry_dir: Path, tiny_int8: Path, tmp_path: Path
):
    reg = ["registry", "--registry", str(registry_dir)]
    one = cli(*reg, "show")
    assert one.returncode == 0 and "manifest schema 1" in one.stderr
    assert json.loads(one.stdout)["version"] == "tiny-1"
    ref_file = tmp_path / "reference.npz"
    rng = np.random.default_rng(0)
    ref = reference.build(
        rng.normal(size=(40, 8)),
        rng.dirichlet(np.ones(6), 40),
        rng.integers(0, 6, 40),
        rng.random((40, 4)),
        LABELS,
    )
    ref_file.write_bytes(ref.dumps())
    Registry.from_uri(registry_dir).publish(
        tiny_int8, version="tiny-2", reference=ref_file, **tiny_fields()
    )
    report = json.loads(cli(*reg, "--json", "show", "--schema").stdout)
    assert report["schema_version"] == 2
    assert report["needed_by"] == {"version tiny-2": ["reference"]}
    assert "version tiny-2 (reference)" in cli(*reg, "show", "--schema").stdout
