"""Fine-tuning replaces what the head phase reached unless it falls short of it by more than
`train.fine_tune_tolerance`, and on freshly augmented pixels (through simulated int8 rounding
or not) it trains the top blocks and the head, nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from training.config import Config, PhaseConfig, TrainConfig, load_config
from training.data import load_dataset


def _tiny_config(image_folder: Path, tmp_path: Path, *overrides: str) -> Config:
    """The built-in defaults on the small test folder at 64x48, caching under tmp_path."""
    return load_config(
        None,
        [
            f"data.dir={image_folder}",
            "input.height=64",
            "input.width=48",
            f"cache_dir={tmp_path / 'cache'}",
            *overrides,
        ],
    )


def _fit(baseline: float | None) -> tuple[list[np.ndarray], list[np.ndarray], list[dict]]:
    import keras

    from training.train import fit_phase

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    start = [w.copy() for w in model.get_weights()]
    rows = fit_phase(
        model,
        x,
        y,
        x,
        y,
        phase=PhaseConfig(epochs=3, patience=3),
        train=TrainConfig(batch_size=16),
        classes=2,
        name="fine_tune",
        baseline=baseline,
    )
    return start, model.get_weights(), rows


def test_a_phase_that_never_beats_its_baseline_keeps_its_starting_weights():
    start, end, rows = _fit(baseline=1.01)  # no macro-F1 can beat it
    assert len(rows) == 3
    for a, b in zip(start, end, strict=True):
        np.testing.assert_array_equal(a, b)
    start, end, rows = _fit(baseline=None)  # the same phase without one keeps its best epoch
    assert not np.allclose(start[0], end[0])


@pytest.mark.slow
def test_the_fine_tune_must_come_within_the_tolerance_of_the_head(
    image_folder, tmp_path, monkeypatch
):
    import training.train as train_module

    cfg = _tiny_config(
        image_folder,
        tmp_path,
        "augment.views=1",
        "train.head.epochs=2",
        "train.fine_tune.epochs=1",
        "train.fine_tune_blocks=1",
        "train.fine_tune_tolerance=0.05",
    )
    baselines: dict[str, float | None] = {}

    def spy(*args, **kwargs):
        baselines[kwargs["name"]] = kwargs.get("baseline")
        return real(*args, **kwargs)

    real = train_module.fit_phase
    monkeypatch.setattr(train_module, "fit_phase", spy)
    ds, pixels = load_dataset(cfg)
    rows = train_module.train(cfg, ds, pixels).epochs
    head_best = max(r["val_macro_f1"] for r in rows if r["phase"] == "head")
    assert baselines["head"] is None
    assert baselines["fine_tune"] == pytest.approx(head_best - 0.05)


def _weights(model, names: set[str]) -> dict[str, list[np.ndarray]]:
    return {n: [w.copy() for w in model.get_layer(n).get_weights()] for n in names}


@pytest.mark.slow
@pytest.mark.parametrize("quantization_aware", [False, True])
def test_pixel_fine_tune_moves_only_the_top_blocks_and_keeps_batchnorm(
    image_folder, tmp_path, quantization_aware
):
    from training.backbones import build_backbone
    from training.fake_quant import FakeQuant, QuantizedKernel
    from training.train import train

    cfg = _tiny_config(
        image_folder,
        tmp_path,
        "augment.views=1",
        "train.head.epochs=0",  # no head score to beat: the fine-tuned weights stay
        "train.fine_tune.epochs=1",
        "train.fine_tune.patience=1",
        "train.fine_tune_blocks=1",
        "train.fine_tune_on=pixels",
        f"train.quantization_aware={str(quantization_aware).lower()}",
    )
    ds, pixels = load_dataset(cfg)
    before = build_backbone(
        cfg.model.backbone,
        (64, 48, 3),
        weights=cfg.model.weights,
        cache_dir=Path(cfg.cache_dir),
    )
    top_conv, top_bn = "block15_project_conv", "block15_bn2"
    trunk_conv, head_bn = "block14_project_conv", "head_bn"
    old = _weights(before, {top_conv, top_bn, trunk_conv, head_bn})

    trained = train(cfg, ds, pixels)

    assert [r["phase"] for r in trained.epochs] == ["fine_tune"]
    backbone = trained.model.get_layer("efficientnet_lite0")
    assert not any(isinstance(x, (FakeQuant, QuantizedKernel)) for x in backbone.layers)
    new = _weights(backbone, set(old))
    assert not np.allclose(new[top_conv][0], old[top_conv][0]), "the top block did not train"
    np.testing.assert_array_equal(new[trunk_conv][0], old[trunk_conv][0])
    for bn in (top_bn, head_bn):  # frozen: scale, shift and statistics stay ImageNet's
        for a, b in zip(new[bn], old[bn], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_from_scratch_trains_every_layer_and_the_batchnorm_statistics(
    image_folder, tmp_path, monkeypatch
):
    import keras

    import training.train as train_module

    cfg = _tiny_config(
        image_folder,
        tmp_path,
        "model.backbone=mobilenet_v2",
        "model.alpha=0.35",
        "model.weights=null",
        "model.tta_flip=true",
        "train.head.epochs=1",
    )
    ds, pixels = load_dataset(cfg)
    names = ("Conv1", "bn_Conv1", "Conv_1")
    initial: dict[str, list[np.ndarray]] = {}

    def _inner(backbone: keras.Model) -> keras.Model:
        return next(layer for layer in backbone.layers if isinstance(layer, keras.Model))

    def spy(c):
        backbone = real(c)
        initial.update(_weights(_inner(backbone), set(names)))
        return backbone

    real = train_module.backbone_for
    monkeypatch.setattr(train_module, "backbone_for", spy)
    trained = train_module.train(cfg, ds, pixels)

    assert [r["phase"] for r in trained.epochs] == ["scratch"]
    assert "tta_mean" in [layer.name for layer in trained.model.layers]  # model.tta_flip kept
    final = _weights(_inner(trained.model.get_layer("mobilenet_v2_0.35")), set(names))
    for name in names:
        assert not np.allclose(initial[name][0], final[name][0]), f"{name} did not train"
    moving_mean = 2
    assert not np.allclose(initial["bn_Conv1"][moving_mean], final["bn_Conv1"][moving_mean])
