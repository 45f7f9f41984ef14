"""The exported network: a frozen trunk, fine-tuned top copies, and the members' mean."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")
import keras

from training.backbones import build_backbone
from training.model import assemble, build_head, copy_top, split


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_backbone(
        "efficientnet_lite0", (64, 48, 3), weights=None, cache_dir=tmp_path_factory.mktemp("c")
    )


def test_copied_top_is_independent_and_starts_equal(lite0: keras.Model):
    trunk, top = split(lite0, 2)
    copy = copy_top(top, top.get_weights(), "top_1")
    x = np.random.default_rng(0).normal(size=(2, *trunk.output_shape[1:])).astype(np.float32)
    np.testing.assert_allclose(copy.predict(x, verbose=0), top.predict(x, verbose=0), atol=1e-5)
    assert all(not layer.trainable for layer in copy.layers if "bn" in layer.name.lower())
    before = [w.copy() for w in top.get_weights()]
    copy.set_weights([w + 1.0 for w in copy.get_weights()])
    for a, b in zip(before, top.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_members_share_the_trunk_and_average_their_logits(lite0: keras.Model):
    trunk, top = split(lite0, 2)
    copy = copy_top(top, [w * 0.9 for w in top.get_weights()], "top_1")
    heads = [build_head(1280, 6, 0.2, name=f"head_{k}") for k in range(2)]
    model = assemble(trunk, [(top, heads[0]), (copy, heads[1])], tta_flip=False)
    pixels = np.random.default_rng(1).uniform(0, 255, size=(3, 64, 48, 3)).astype(np.float32)
    gap = keras.layers.GlobalAveragePooling2D()
    shared = trunk.predict(pixels, verbose=0)
    each = [h.predict(gap(t(shared)), verbose=0) for t, h in ((top, heads[0]), (copy, heads[1]))]
    # random weights give tiny logits: compare relative to their size
    atol = 1e-3 * float(np.abs(each).max())
    assert not np.allclose(each[0], each[1], rtol=0, atol=100 * atol)
    np.testing.assert_allclose(model.predict(pixels, verbose=0), np.mean(each, 0), atol=atol)
    single = assemble(trunk, [(top, heads[0])], tta_flip=False)
    np.testing.assert_allclose(single.predict(pixels, verbose=0), each[0], atol=atol)
