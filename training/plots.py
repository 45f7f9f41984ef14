"""Pictures for the run and the README: confusion matrix, reliability, hardest mistakes."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from training import calibrate, metrics, per_source
from wastesort import contact_sheet
from wastesort.scoring import softmax

if TYPE_CHECKING:
    import keras

    from training.data import Dataset
    from training.evaluate import Scores, VariantScores

log = logging.getLogger(__name__)


def confusion_png(matrix: np.ndarray, labels: Sequence[str], path: Path, title: str) -> Path:
    m = np.asarray(matrix)
    rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.6, 4.8), dpi=110)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            colour = "white" if rows[i, j] > 0.6 else "black"
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def reliability_png(
    curves: dict[str, list[dict[str, float]]], path: Path, title: str = "reliability"
) -> Path:
    """One line per curve name (e.g. before/after temperature scaling)."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4), dpi=110)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for name, rows in curves.items():
        ax.plot(
            [r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name
        )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def mistakes_png(
    *,
    images: np.ndarray,
    probs: np.ndarray,
    y_true: np.ndarray,
    labels: Sequence[str],
    names: Sequence[str],
    path: Path,
    count: int = 16,
) -> tuple[Path, list[dict]]:
    """A contact sheet of the most confident errors (the ones calibration cannot excuse)."""
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    worst = wrong[np.argsort(-conf[wrong])][:count]
    listed = [
        {
            "path": names[i],
            "true": labels[y_true[i]],
            "predicted": labels[pred[i]],
            "confidence": round(float(conf[i]), 4),
        }
        for i in worst
    ]
    tiles = [
        contact_sheet.Tile(
            Image.fromarray(np.asarray(images[i], dtype=np.uint8)),
            [f"{item['true']} -> {item['predicted']} {item['confidence']:.2f}", item["path"]],
        )
        for i, item in zip(worst, listed, strict=True)
    ]
    title = "most confident mistakes (true -> predicted)" if tiles else "no mistakes"
    contact_sheet.write(tiles, path, title=title, lines=2)
    return path, listed


def run_plots(
    folder: Path,
    *,
    int8: VariantScores,
    float_model: Scores,
    ds: Dataset,
    pixels: np.ndarray,
    bins: int,
) -> list[dict]:
    """The served (int8) model's pictures on the test split, plus both confusion matrices as
    JSON for the README. Returns the hardest mistakes for the summary."""
    folder.mkdir(exist_ok=True)
    labels, test, y_true = ds.labels, ds.indices("test"), ds.targets("test")
    confusion_png(
        np.array(int8.test["confusion"]),
        labels,
        folder / "confusion_int8.png",
        f"int8 on the test split: accuracy {int8.test['accuracy']:.3f}, "
        f"macro-F1 {int8.test['macro_f1']:.3f}",
    )
    for name, scores in (("int8", int8), ("float", float_model)):
        (folder / f"confusion_{name}.json").write_text(
            json.dumps({"labels": labels, "rows_true_cols_predicted": scores.test["confusion"]})
        )
    uncalibrated = softmax(calibrate.log_probs(int8.test_probs) * int8.temperature)
    reliability_png(
        {
            "int8, T=1": metrics.reliability(uncalibrated, y_true, bins),
            f"int8, T={int8.temperature:.2f}": metrics.reliability(int8.test_probs, y_true, bins),
        },
        folder / "reliability_int8.png",
        "reliability on the test split",
    )
    _, hardest = mistakes_png(
        images=pixels[test],
        probs=int8.test_probs,
        y_true=y_true,
        labels=labels,
        names=[ds.name(i) for i in test],
        path=folder / "hardest_mistakes_int8.png",
    )
    return hardest


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def source_mistakes(
    folder: Path,
    *,
    int8: VariantScores,
    ds: Dataset,
    pixels: np.ndarray,
    model: keras.Model | None = None,
    count: int = 8,
) -> dict[str, dict[str, Any]]:
    """One sheet per photo set (each train source's test split, each eval source, each
    `unmapped/`): the int8 model's most confident wrong answers (on `unmapped`, every answer
    is wrong), each under the float model's Grad-CAM of the class int8 answered when `model`
    is given, so a person can tell a background shortcut from a real cue.

    Returns:
        By set: the sheet's file name, whether it carries Grad-CAM, and the mistakes listed.
    """
    from training.evaluate import extra, photo_sets  # noqa: PLC0415 (no cycle at import)

    folder.mkdir(exist_ok=True)
    probs = int8.test_probs
    if int8.extra_probs is not None:
        probs = np.concatenate([probs, int8.extra_probs])
    where = {i: k for k, i in enumerate(ds.indices("test") + extra(ds))}
    labels = [*ds.labels, "none of the classes"]
    index = {label: k for k, label in enumerate(ds.labels)}
    out: dict[str, dict[str, Any]] = {}
    for name, kind, idx in photo_sets(ds):
        p = probs[[where[i] for i in idx]]
        y = np.array([index.get(ds.items[i].label, len(ds.labels)) for i in idx])
        if kind == per_source.UNMAPPED:
            y = np.full(len(idx), len(ds.labels))
        images = np.array(pixels[idx], dtype=np.uint8)
        cams = model is not None and _with_gradcam(model, images, p, y, count)
        path = folder / f"hardest_mistakes_{_file_name(name)}.png"
        _, listed = mistakes_png(
            images=images,
            probs=p,
            y_true=y,
            labels=labels,
            names=[ds.name(i) for i in idx],
            path=path,
            count=count,
        )
        out[name] = {"sheet": path.name, "gradcam": bool(cams), "mistakes": listed}
    return out


def _with_gradcam(
    model: keras.Model, images: np.ndarray, probs: np.ndarray, y: np.ndarray, count: int
) -> bool:
    """Lay the float model's Grad-CAM over the images `mistakes_png` will pick (in place).
    False when the model has no map to show (then the sheet shows the plain photos)."""
    from training.explain import ExplainError, gradcam, overlay, upsample  # noqa: PLC0415

    pred, conf = probs.argmax(axis=1), probs.max(axis=1)
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-conf[wrong])][:count]
    if not len(worst):
        return False
    try:
        _, cams = gradcam(model, images[worst], classes=pred[worst])
    except ExplainError as exc:
        log.warning("no Grad-CAM on the mistakes sheets: %s", exc)
        return False
    size = (images.shape[2], images.shape[1])
    for k, i in enumerate(worst):
        images[i] = overlay(images[i], upsample(cams[k], size))
    return True
