"""The updater installs a version's reference file beside its model (drift at the bin, offline
too), and a missing, corrupt or mismatched reference never stops the model from serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.installed import reference_name
from edge.references import MAX_FETCHES
from tests.conftest import LABELS, sample_bytes, tiny_fields
from tests.core.test_reference import referenced_registry  # noqa: F401 (a fixture)
from tests.edge.conftest import publish
from tests.edge.test_edge_updater import make_updater
from wastesort import reference
from wastesort.manifest import OutputSpec
from wastesort.registry import Registry

PUBLISHED = Path("artifacts") / "tiny-2" / "reference.npz"


def kept_references(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "models").glob("*.npz"))


def spoil(path: Path) -> bytes:
    """Flip a byte of a published (read-only) file; returns the good bytes."""
    good = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(good[:-5] + bytes([good[-5] ^ 0xFF]) + good[-4:])
    return good


def test_the_reference_is_installed_beside_the_model_and_serves_offline(
    tmp_path: Path,
    referenced_registry: Path,  # noqa: F811
    tiny_models: Path,
):
    state = tmp_path / "state"
    updater = make_updater(state, str(referenced_registry))
    clf = updater.start()
    assert clf.version == "tiny-2" and clf.reference is not None
    assert clf.predict(sample_bytes("glass")).embedding is not None
    ref = updater.current.entry.reference
    name = reference_name(ref)
    assert kept_references(state) == [name]
    assert (state / "models" / name).read_bytes() == (referenced_registry / PUBLISHED).read_bytes()
    status = updater.status()
    assert (status["reference"], status["reference_error"]) == (True, None)

    offline = make_updater(state, str(tmp_path / "no-such-registry"))
    again = offline.start()
    assert again.reference is not None and offline.status()["reference"] is True

    # A version without a reference: none expected; the last known good keeps its own.
    registry = Registry.from_uri(referenced_registry, cache_dir=tmp_path / "publish-cache")
    publish(registry, tiny_models / "tiny_int8.tflite", "v3", aliases=["production"])
    plain = updater.check()
    assert plain is not None and plain.reference is None
    status = updater.status()
    assert (status["reference"], status["reference_error"]) == (None, None)
    assert kept_references(state) == [name]
    publish(registry, tiny_models / "tiny_int8.tflite", "v4", aliases=["production"])
    assert updater.check() is not None
    assert kept_references(state) == []  # tiny-2 is neither current nor last known good


def test_a_corrupt_reference_serves_without_drift_and_is_fetched_again(
    tmp_path: Path,
    referenced_registry: Path,  # noqa: F811
):
    published = referenced_registry / PUBLISHED
    good = spoil(published)
    state = tmp_path / "state"
    updater = make_updater(state, str(referenced_registry))
    clf = updater.start()
    assert clf.version == "tiny-2" and clf.reference is None  # the model serves all the same
    assert clf.predict(sample_bytes("glass")).embedding is None
    status = updater.status()
    assert status["reference"] is False and "sha256" in status["reference_error"]
    assert "serves without drift" in updater.last_error
    assert kept_references(state) == []  # never a file that does not verify

    published.write_bytes(good)  # the registry heals: the next poll fetches it
    fixed = updater.check()
    assert fixed is not None and fixed.reference is not None and fixed.version == "tiny-2"
    assert updater.take_pending() is fixed
    assert updater.status()["reference"] is True and updater.status()["version"] == "tiny-2"
    assert len(kept_references(state)) == 1
    assert updater.check() is None  # nothing left to do


def test_a_reference_that_stays_corrupt_is_fetched_a_few_times_only(
    tmp_path: Path,
    referenced_registry: Path,  # noqa: F811
):
    published = referenced_registry / PUBLISHED
    good = spoil(published)
    state = tmp_path / "state"
    updater = make_updater(state, str(referenced_registry))
    assert updater.start().reference is None
    for _ in range(MAX_FETCHES - 1):
        assert updater.check() is None
    published.write_bytes(good)
    assert updater.check() is None  # given up on until a restart
    assert updater.status()["reference"] is False
    assert make_updater(state, str(referenced_registry)).start().reference is not None


def test_an_install_without_its_reference_on_disk_keeps_working(
    tmp_path: Path,
    referenced_registry: Path,  # noqa: F811
):
    state = tmp_path / "state"
    make_updater(state, str(referenced_registry)).start()
    (kept,) = (state / "models").glob("*.npz")

    kept.unlink()  # installed by a release that kept no reference: offline, no drift
    offline = make_updater(state, str(tmp_path / "no-such-registry"))
    clf = offline.start()
    assert clf.version == "tiny-2" and clf.reference is None
    assert offline.status()["reference"] is False

    online = make_updater(state, str(referenced_registry))  # online: fetched and kept
    assert online.start().reference is not None and kept.exists()

    kept.write_bytes(b"damaged")  # a damaged copy is never used, but fetched again
    assert make_updater(state, str(referenced_registry)).start().reference is not None
    assert kept.read_bytes() == (referenced_registry / PUBLISHED).read_bytes()
    kept.write_bytes(b"damaged")
    assert make_updater(state, str(tmp_path / "no-such-registry")).start().reference is None


def test_a_reference_that_does_not_fit_the_model_is_refused_for_good(
    tmp_path: Path, tiny_models: Path
):
    rng = np.random.default_rng(0)
    n = 40
    scores = rng.dirichlet(np.ones(len(LABELS)), n)
    misfit = reference.build(  # 7-wide embeddings: the model's are wider
        rng.normal(size=(n, 7)),
        scores,
        scores.argmax(axis=1),
        rng.random((n, len(reference.STATS))),
        LABELS,
    )
    (tmp_path / "misfit.npz").write_bytes(misfit.dumps())
    root = tmp_path / "reg"
    Registry.from_uri(root).publish(
        tiny_models / "named" / "tiny_int8.tflite",
        version="tiny-3",
        aliases=["production"],
        reference=tmp_path / "misfit.npz",
        outputs={"logits": tiny_fields()["output"], "embedding": OutputSpec(kind="embedding")},
        **tiny_fields(),
    )
    updater = make_updater(tmp_path / "state", str(root))
    clf = updater.start()
    assert clf.version == "tiny-3" and clf.reference is None
    assert clf.predict(sample_bytes("glass")).decision
    status = updater.status()
    assert status["reference"] is False and "embedding" in status["reference_error"]
    assert updater.check() is None  # not fetched again: it will never fit
