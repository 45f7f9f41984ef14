"""Training in phases: the head on cached activations first, then (optionally) the top blocks,
on the cached trunk output or on freshly augmented images (`train.fine_tune_on`).

Each phase stops early on validation macro-F1 and restores its best epoch. BatchNorm layers
in the fine-tuned blocks stay frozen (in inference mode) with their ImageNet statistics.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training import composite
from training import features as feat
from training.config import Config, PhaseConfig, TrainConfig
from training.data import Dataset
from training.fake_quant import simulate_int8
from training.metrics import macro_f1
from training.model import assemble, augmenter, backbone_for, build_head, freeze_batchnorm, split
from training.weights import class_weights, weights_for

__all__ = ["Batches", "Trained", "class_weights", "fit_phase", "train"]

log = logging.getLogger(__name__)

EpochHook = Callable[[dict[str, Any]], None]


@dataclass
class Trained:
    model: keras.Model
    """The whole network, float pixels -> logits, ready to export."""
    epochs: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class _BestMacroF1(keras.callbacks.Callback):
    """Early stopping on validation macro-F1 that restores the best epoch's weights."""

    def __init__(
        self,
        *,
        x_val: np.ndarray,
        y_val: np.ndarray,
        classes: int,
        patience: int,
        phase: str,
        hook: EpochHook | None,
        baseline: float | None = None,
        w_val: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.x_val, self.y_val, self.classes, self.w_val = x_val, y_val, classes, w_val
        self.patience, self.phase, self.hook = patience, phase, hook
        self.baseline = baseline
        self.best = -1.0
        self.best_epoch = -1
        self.best_weights: list[np.ndarray] | None = None
        self.rows: list[dict[str, Any]] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.baseline is not None:  # an epoch must beat it to replace the starting weights
            self.best, self.best_weights = self.baseline, self.model.get_weights()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logits = self.model.predict(self.x_val, verbose=0, batch_size=256)
        pred = logits.argmax(axis=1)
        score = macro_f1(self.y_val, pred, self.classes, weights=self.w_val)
        row = {
            "phase": self.phase,
            "epoch": epoch,
            "loss": float((logs or {}).get("loss", float("nan"))),
            "val_macro_f1": score,
            "val_accuracy": float((pred == self.y_val).mean()),
        }
        self.rows.append(row)
        log.info(
            "%s epoch %d: loss %.4f, val macro-F1 %.4f, val accuracy %.4f",
            self.phase,
            epoch,
            row["loss"],
            score,
            row["val_accuracy"],
        )
        if self.hook:
            self.hook(row)
        if score > self.best:
            self.best, self.best_epoch = score, epoch
            self.best_weights = self.model.get_weights()
        elif epoch - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        if self.best_epoch < 0 and self.baseline is not None:
            log.info(
                "%s: no epoch beat val macro-F1 %.4f; kept the weights it started from",
                self.phase,
                self.baseline,
            )
        else:
            log.info(
                "%s: best val macro-F1 %.4f at epoch %d", self.phase, self.best, self.best_epoch
            )


def _optimizer(phase: PhaseConfig, steps: int) -> keras.optimizers.Optimizer:
    lr: Any = phase.learning_rate
    if phase.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(phase.learning_rate, max(steps, 1))
    if phase.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=phase.weight_decay)
    if phase.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=phase.weight_decay or None)


def fit_phase(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    phase: PhaseConfig,
    train: TrainConfig,
    classes: int,
    name: str,
    hook: EpochHook | None = None,
    augment: keras.Model | None = None,
    baseline: float | None = None,
    weights: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
) -> list[dict[str, Any]]:
    """Fit `model` on (x, y) with early stopping on validation macro-F1; returns epoch rows.

    With `augment`, x holds images and every batch is augmented afresh. With `baseline` (the
    validation macro-F1 to reach), the phase keeps its starting weights unless an epoch
    beats it. `weights`: per-sample training weights (default: `train.class_weights` over y)
    and validation weights (default: none), as `training.weights` makes them."""
    if phase.epochs == 0:
        return []
    steps = phase.epochs * math.ceil(len(x) / train.batch_size)
    model.compile(
        optimizer=_optimizer(phase, steps),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=train.label_smoothing
        ),
    )
    best = _BestMacroF1(
        x_val=x_val,
        y_val=y_val,
        classes=classes,
        patience=phase.patience,
        phase=name,
        hook=hook,
        baseline=baseline,
        w_val=weights[1],
    )
    batches = Batches(x, y, classes=classes, train=train, augment=augment, weights=weights[0])
    model.fit(batches, epochs=phase.epochs, verbose=0, callbacks=[best])
    return best.rows


class Batches(keras.utils.PyDataset):
    """Shuffled, class-weighted training batches of cached activations (or of images, each
    batch augmented afresh), with optional mixup and Gaussian feature noise (`train.mixup`,
    `train.feature_noise`). Seeded: the same config gives the same batches."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        classes: int,
        train: TrainConfig,
        augment: keras.Model | None = None,
        weights: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.x, self.batch_size, self.augment = x, train.batch_size, augment
        self.targets = keras.utils.to_categorical(y, classes).astype(np.float32)
        if weights is None:
            weights = class_weights(y, classes, train.class_weights)[y]
        self.weights = np.asarray(weights, dtype=np.float32)
        self.mixup = train.mixup
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if train.feature_noise else 0
        self.noise = train.feature_noise * rms
        self.seed, self.epoch = train.seed, 0
        self.order = np.random.default_rng((self.seed, 0)).permutation(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.x))

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        x, t, w = self.x[idx], self.targets[idx], self.weights[idx]
        if self.augment is not None:
            x = keras.ops.convert_to_numpy(self.augment(x.astype(np.float32), training=True))
            x = np.clip(x, 0.0, 255.0)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if self.mixup:
            lam = rng.beta(self.mixup, self.mixup, size=len(idx)).astype(np.float32)
            other = rng.permutation(len(idx))
            shape = (-1,) + (1,) * (x.ndim - 1)
            x = lam.reshape(shape) * x + (1 - lam.reshape(shape)) * x[other]
            t = lam[:, None] * t + (1 - lam[:, None]) * t[other]
            w = lam * w + (1 - lam) * w[other]
        if self.noise:
            x = x + rng.normal(0.0, self.noise, size=x.shape).astype(np.float32)
        return x, t, w


def _views(
    y: np.ndarray, acts: np.ndarray, w: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(views, N, ...) activations -> flat training set, labels and weights repeated per view."""
    views = acts.shape[0]
    return (
        acts.reshape((-1, *acts.shape[2:])),
        np.tile(y, views),
        w if w is None else np.tile(w, views),
    )


def train(  # noqa: PLR0915 (the phases read best in one place)
    cfg: Config,
    ds: Dataset,
    pixels: np.ndarray,
    *,
    hook: EpochHook | None = None,
) -> Trained:
    """Build the network from `cfg` and train it on the dataset's train split."""
    keras.utils.set_random_seed(cfg.train.seed)
    classes = len(ds.labels)
    timings: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    backbone = backbone_for(cfg)
    if cfg.model.weights is None:
        return _train_from_scratch(cfg, ds, pixels, backbone, hook)
    backbone.trainable = False
    tr, va = ds.indices("train"), ds.indices("val")
    y_tr, y_va = ds.targets("train"), ds.targets("val")
    w_tr, w_va = weights_for(ds, cfg.train.class_weights)
    pixels, tr, y_tr, w_tr = composite.for_training(cfg, ds, pixels, train=tr, y=y_tr, weights=w_tr)
    aug = augmenter(cfg.augment, cfg.train.seed)
    key_parts = {
        "fingerprint": ds.fingerprint,
        "split": [ds.split[s] for s in ("train", "val")],
        "input": cfg.input.model_dump(),
        "backbone": cfg.model.backbone,
        "weights": cfg.model.weights,
        "alpha": cfg.model.alpha,
        "augment": cfg.augment.cache_dump(),
        "seed": cfg.train.seed,
    }
    if cfg.composite.enabled:  # composites joined the train photos; off, the keys stay as they were
        key_parts["composite"] = cfg.composite.model_dump(mode="json")
    cache = Path(cfg.cache_dir) / "features"
    bs = cfg.train.batch_size
    can_cache = cfg.model.weights is not None  # random weights differ per run: nothing to reuse

    def acts(model: keras.Model, tag: str, idx: list[int], views: int, augment: bool) -> np.ndarray:
        def compute() -> np.ndarray:
            return feat.extract(
                model, pixels[idx], batch_size=bs, views=views, augment=aug if augment else None
            )

        if not can_cache:
            return compute()
        return feat.cached(
            cache / f"{tag}-{feat.cache_key({**key_parts, 'tag': tag})}.npy", compute
        )

    # The frozen trunk runs once per view; with cached fine-tuning its output is cached and
    # the pooled features come from running the (still ImageNet) top over that cache.
    parts = split(backbone, cfg.train.fine_tune_blocks)
    fine_tune = cfg.train.fine_tune.epochs > 0 and parts is not None
    if cfg.train.fine_tune.epochs > 0 and parts is None:
        log.warning("fine-tuning needs a Lite backbone cut; skipped for %s", cfg.model.backbone)
    on_pixels = cfg.train.fine_tune_on == "pixels"
    t0 = time.monotonic()
    gap = keras.layers.GlobalAveragePooling2D()
    if fine_tune and not on_pixels:
        trunk, top = parts
        tag = f"trunk{cfg.train.fine_tune_blocks}"
        a_tr = acts(trunk, f"{tag}-train", tr, cfg.augment.views, True)
        a_va = acts(trunk, f"{tag}-val", va, 1, False)[0]
        pooled_top = keras.Sequential([top, gap])
        f_tr = np.stack([pooled_top.predict(v, batch_size=256, verbose=0) for v in a_tr])
        f_va = pooled_top.predict(a_va, batch_size=256, verbose=0)
    else:
        pooled = keras.Sequential([backbone, gap], name="pooled")
        f_tr = acts(pooled, "pooled-train", tr, cfg.augment.views, True)
        f_va = acts(pooled, "pooled-val", va, 1, False)[0]
    timings["features_s"] = time.monotonic() - t0

    # Phase 1: the head on pooled features.
    head = build_head(f_tr.shape[-1], classes, cfg.model.dropout)
    t0 = time.monotonic()
    x, y, w = _views(y_tr, f_tr, w_tr)
    rows += fit_phase(
        head,
        x,
        y,
        f_va,
        y_va,
        phase=cfg.train.head,
        train=cfg.train,
        classes=classes,
        name="head",
        hook=hook,
        weights=(w, w_va),
    )
    timings["head_s"] = time.monotonic() - t0
    head_best = max((r["val_macro_f1"] for r in rows), default=None)

    # Phase 2: the top blocks (BatchNorm frozen) and the head, on freshly augmented images
    # or on the cached trunk output.
    if fine_tune:
        t0 = time.monotonic()
        trunk, top = parts
        backbone.trainable = True
        trunk.trainable = False
        freeze_batchnorm(top)
        augment = None
        if on_pixels:
            tuned = assemble(backbone, head, tta_flip=False)
            x, y, w, x_val = pixels[tr], y_tr, w_tr, pixels[va].astype(np.float32)
            augment = augmenter(cfg.augment, cfg.train.seed)  # fresh: a warm cache skips `aug`
        else:
            inputs = keras.Input(a_tr.shape[2:], name="trunk_out")
            tuned = keras.Model(inputs, head(gap(top(inputs))), name="fine_tune")
            (x, y, w), x_val = _views(y_tr, a_tr, w_tr), a_va
            del a_tr
        if cfg.train.quantization_aware:
            tuned = simulate_int8(tuned)
        rows += fit_phase(
            tuned,
            x,
            y,
            x_val,
            y_va,
            phase=cfg.train.fine_tune,
            train=cfg.train,
            classes=classes,
            name="fine_tune",
            hook=hook,
            augment=augment,
            baseline=None if head_best is None else head_best - cfg.train.fine_tune_tolerance,
            weights=(w, w_va),
        )
        timings["fine_tune_s"] = time.monotonic() - t0
    backbone.trainable = False
    model = assemble(backbone, head, tta_flip=cfg.model.tta_flip)
    return Trained(model=model, epochs=rows, timings=timings)


def _train_from_scratch(
    cfg: Config,
    ds: Dataset,
    pixels: np.ndarray,
    backbone: keras.Model,
    hook: EpochHook | None,
) -> Trained:
    """Random weights have no features worth caching: train the whole network (BatchNorm
    included) on images augmented afresh every batch, with the head phase's settings."""
    t0 = time.monotonic()
    head = build_head(backbone.output_shape[-1], len(ds.labels), cfg.model.dropout)
    model = assemble(backbone, head, tta_flip=False)
    rows = fit_phase(
        model,
        pixels[ds.indices("train")],
        ds.targets("train"),
        pixels[ds.indices("val")].astype(np.float32),
        ds.targets("val"),
        phase=cfg.train.head,
        train=cfg.train,
        classes=len(ds.labels),
        name="scratch",
        hook=hook,
        augment=augmenter(cfg.augment, cfg.train.seed),
        weights=weights_for(ds, cfg.train.class_weights),
    )
    exported = assemble(backbone, head, tta_flip=cfg.model.tta_flip)  # the trained layers
    return Trained(model=exported, epochs=rows, timings={"scratch_s": time.monotonic() - t0})
