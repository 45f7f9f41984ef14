"""The `.pth` reader refuses code, and the transplanted Lite models really are the ImageNet
models."""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from training.backbones.torch_pickle import LEGACY_MAGIC, UnsafePickleError, load_state_dict
from wastesort.manifest import InputSpec
from wastesort.preprocess import preprocess

DATA = Path(__file__).resolve().parent / "data"

BOTTLES = {440, 720, 737, 898, 907}  # beer, pill, pop, water, wine bottle
SPEC = InputSpec(height=224, width=224)


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def _legacy(payload: object) -> bytes:
    buf = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    pickle.dump(payload, buf, protocol=2)
    pickle.dump([], buf, protocol=2)
    return buf.getvalue()


def test_reader_refuses_globals_outside_the_allow_list():
    with pytest.raises(UnsafePickleError, match=r"refusing to load global (posix|os|nt)\.system"):
        load_state_dict(_legacy(OrderedDict(evil=_Boom())))
    with pytest.raises(UnsafePickleError, match="bad magic"):
        load_state_dict(pickle.dumps({"a": 1}))
    with pytest.raises(UnsafePickleError, match="malformed"):
        load_state_dict(b"\x80\x02")


def test_reader_loads_the_official_lite0_weights(lite0_state):
    assert len(lite0_state) == 296
    params = sum(v.size for k, v in lite0_state.items() if not k.endswith("num_batches_tracked"))
    assert params == pytest.approx(4.69e6, rel=0.01)
    assert lite0_state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert lite0_state["_fc.weight"].dtype == np.float32


@pytest.fixture(scope="module")
def lite0_state():
    from training.backbones import lite_pth_path

    return load_state_dict(lite_pth_path("efficientnet_lite0"))


@pytest.mark.parametrize(
    ("variant", "tensors"),
    [("efficientnet_lite0", 247), ("efficientnet_lite1", 322), ("efficientnet_lite2", 322)],
)
def test_transplanted_head_sees_bottles(variant, tensors):
    from training.backbones import lite_pth_path
    from training.backbones.lite import build_lite, transplant

    model = build_lite(variant, (224, 224, 3), include_top=True)
    state = load_state_dict(lite_pth_path(variant))
    assert transplant(model, state) == tensors  # every weight of the Keras model, no gaps
    files = sorted(DATA.glob("glass_bottle_*.jpg"))
    assert len(files) >= 3
    x = np.stack([preprocess(Path(f).read_bytes(), SPEC) for f in files]).astype(np.float32)
    logits = model.predict(x, verbose=0)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    for f, p in zip(files, probs, strict=True):
        top5 = set(np.argsort(-p)[:5].tolist())
        assert top5 & BOTTLES, f"{variant} {f.name}: no bottle class in top-5 {sorted(top5)}"
        assert p.max() > 0.1, f"{variant} {f.name}: near-uniform output (max {p.max():.4f})"
        entropy = float(-(p * np.log(p + 1e-12)).sum())
        assert entropy < np.log(1000) - 2


def test_transplant_refuses_a_wrong_file(lite0_state):
    from training.backbones.lite import build_lite, transplant

    model = build_lite("efficientnet_lite0", (64, 64, 3))
    broken = dict(lite0_state)
    del broken["_blocks.3._project_conv.weight"]
    with pytest.raises(ValueError, match=r"_blocks\.3\._project_conv\.weight"):
        transplant(model, broken)


def test_a_cold_weights_cache_trains_the_same_model(tmp_path: Path):
    """Converting the `.pth` into the cache must not use random numbers a warm cache does not:
    the head that is built next gets the same initial weights either way."""
    import keras

    from training.backbones import build_backbone
    from training.model import build_head

    heads, kernels = [], []
    for _ in ("cold", "warm"):
        keras.utils.set_random_seed(7)
        backbone = build_backbone(
            "efficientnet_lite0", (64, 48, 3), weights="pretrained", cache_dir=tmp_path
        )
        kernels.append(backbone.get_layer("head_conv").kernel.numpy())
        heads.append(build_head(1280, 6, 0.2).get_layer("logits").kernel.numpy())
    assert len(list(tmp_path.glob("lite0-imagenet-*.weights.h5"))) == 1
    np.testing.assert_array_equal(kernels[0], kernels[1])
    np.testing.assert_array_equal(heads[0], heads[1])


def test_stochastic_depth_drops_whole_residual_branches_only_while_training():
    """Per image, each residual branch is kept or skipped as a whole, more often the deeper the
    block; at inference the network is the one without it, so the export does not change."""
    import keras

    from training.backbones.lite import num_blocks
    from training.config import load_config
    from training.model import backbone_for, freeze_batchnorm

    def build(rate: float) -> keras.Model:
        small = ["input.height=64", "input.width=48", "model.weights=null"]
        cfg = load_config(None, [*small, f"model.stochastic_depth={rate}"])
        model = backbone_for(cfg)
        freeze_batchnorm(model)
        return model

    keras.utils.set_random_seed(0)
    plain, dropping = build(0.0), build(0.4)
    assert not any(isinstance(x, keras.layers.Dropout) for x in plain.layers)
    dropping.set_weights(plain.get_weights())  # dropout adds no weights
    drops = {x.name: x for x in dropping.layers if isinstance(x, keras.layers.Dropout)}
    adds = [x.name for x in dropping.layers if isinstance(x, keras.layers.Add)]
    assert sorted(drops) == sorted(a.replace("_add", "_drop") for a in adds)
    blocks = num_blocks("efficientnet_lite0")
    for name, layer in drops.items():
        block = name.removesuffix("drop")
        assert layer.input is dropping.get_layer(block + "bn2").output  # the branch, not
        assert dropping.get_layer(block + "add").input[0] is layer.output  # the shortcut
        index = int(block.removeprefix("block").rstrip("_"))
        assert layer.rate == pytest.approx(0.4 * index / blocks)

    x = np.random.default_rng(0).uniform(0, 255, (6, 64, 48, 3)).astype(np.float32)
    np.testing.assert_array_equal(dropping(x, training=False), plain(x, training=False))
    np.testing.assert_array_equal(plain(x, training=True), plain(x, training=False))
    first, second = (np.asarray(dropping(x, training=True)) for _ in range(2))
    assert np.abs(first - second).max() > 0.01 * np.abs(first).max()  # fresh draws per call

    deepest = drops[max(drops, key=lambda n: drops[n].rate)]
    kept = keras.ops.convert_to_numpy(deepest(np.ones((64, 4, 3, 8)), training=True))
    per_image = kept.reshape(64, -1)
    assert np.all(per_image == per_image[:, :1])  # one decision per image, not per value
    assert 0 < np.mean(per_image[:, 0] == 0) < 1
