"""Pictures for the run and the README: confusion matrix, reliability, hardest mistakes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from training import calibrate, metrics
from wastesort.scoring import softmax

if TYPE_CHECKING:
    from training.data import Dataset
    from training.evaluate import Scores, VariantScores


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
    cols = 4
    rows = max(1, int(np.ceil(len(worst) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 2.9), dpi=90)
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i, item in zip(np.atleast_1d(axes).ravel(), worst, listed, strict=False):
        ax.imshow(images[i])
        ax.set_title(f"{item['true']} -> {item['predicted']}\n{item['confidence']:.2f}", fontsize=8)
    if not len(worst):
        fig.suptitle("no mistakes")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
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
