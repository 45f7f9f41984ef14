"""One run, end to end: data -> train -> convert -> evaluate -> calibrate -> gate -> track ->
publish. Each step lives in its own module; this file only puts them in order."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from training import calibrate, metrics, plots, quantize
from training.config import Config
from training.data import Dataset, input_spec, load_dataset, write_split
from training.evaluate import agreement, classifier, entry_for, score_files
from training.publish import golden_samples, pick_golden, publish
from training.report import write_report
from training.tracking import Tracker, git_commit
from wastesort.scoring import softmax

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    gate: quantize.GateResult
    mlflow_run_id: str | None = None
    published_version: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _setup(cfg: Config) -> None:
    import tensorflow as tf  # noqa: PLC0415 (after the config is known to be valid)

    if cfg.threads:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(cfg.threads, 2))


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "accuracy": round(m["accuracy"], 4),
        "macro_f1": round(m["macro_f1"], 4),
        "ece": round(m["ece"], 4),
        "per_class_recall": {k: round(v["recall"], 4) for k, v in m["per_class"].items()},
    }


def run(cfg: Config, *, run_dir: Path | None = None) -> RunResult:
    """Train, evaluate, quantize, track and (if the gate passes) publish.

    Raises:
        DataError: the data folder cannot make a dataset.
        GateError: int8 lost too much against float; everything is tracked, nothing published.
    """
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = run_dir or Path(cfg.output_dir) / f"{cfg.name}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.dump(), indent=2))
    timings: dict[str, float] = {}
    _setup(cfg)
    from training.train import train  # noqa: PLC0415 (imports TensorFlow)

    # --- data --------------------------------------------------------------------------------
    t0 = time.monotonic()
    ds, pixels = load_dataset(cfg)
    write_split(ds, run_dir / "split.csv")
    (run_dir / "data_report.json").write_text(json.dumps(ds.report, indent=2))
    (run_dir / "labels.txt").write_text("\n".join(ds.labels) + "\n")
    timings["data_s"] = time.monotonic() - t0
    log.info("data: %s, fingerprint %s", ds.report["split_sizes"], ds.fingerprint[:12])

    tracker = Tracker(cfg.mlflow, run_dir.name)
    try:
        tracker.params(cfg.dump())
        commit = git_commit()
        tracker.tags(
            {
                "dataset_fingerprint": ds.fingerprint,
                "git_commit": commit,
                "backbone": cfg.model.backbone,
            }
        )
        tracker.mlflow.log_dict(ds.report, "data_report.json")
        result = _run_tracked(cfg, ds, pixels, run_dir, tracker, train, timings, commit)
    except BaseException:
        tracker.end("FAILED")
        raise
    result.timings["total_s"] = time.monotonic() - started
    return result


def _run_tracked(  # noqa: PLR0915, PLR0917
    cfg: Config,
    ds: Dataset,
    pixels: np.ndarray,
    run_dir: Path,
    tracker: Tracker,
    train: Any,
    timings: dict[str, float],
    commit: str | None,
) -> RunResult:
    labels = ds.labels
    step = iter(range(1_000_000))

    # --- train -------------------------------------------------------------------------------
    t0 = time.monotonic()
    trained = train(cfg, ds, pixels, hook=lambda row: tracker.epoch(row, next(step)))
    timings["train_s"] = time.monotonic() - t0
    trained.model.save_weights(run_dir / "model.weights.h5")
    timings.update(trained.timings)
    (run_dir / "epochs.json").write_text(json.dumps(trained.epochs, indent=1))

    # --- float model, directly in Keras ------------------------------------------------------
    va, te = ds.indices("val"), ds.indices("test")
    y_va, y_te = ds.targets("val"), ds.targets("test")
    keras_val = trained.model.predict(pixels[va].astype(np.float32), batch_size=32, verbose=0)
    keras_test = trained.model.predict(pixels[te].astype(np.float32), batch_size=32, verbose=0)

    # --- convert -----------------------------------------------------------------------------
    t0 = time.monotonic()
    tflite_dir = run_dir / "tflite"
    variants = quantize.convert(
        trained.model, tflite_dir, cfg.quantize, pixels[ds.indices("train")], seed=cfg.train.seed
    )
    timings["convert_s"] = time.monotonic() - t0

    # --- evaluate every variant through wastesort.Classifier ---------------------------------
    t0 = time.monotonic()
    val_bytes = [ds.read(i) for i in va]
    test_bytes = [ds.read(i) for i in te]
    results: dict[str, dict[str, Any]] = {}
    t_keras = calibrate.fit_temperature(keras_val, y_va)
    results["keras"] = {
        "temperature": t_keras,
        "test_probs": softmax(keras_test, t_keras),
        "test_raw": metrics.summarize(softmax(keras_test), y_te, labels),
    }
    for mode, variant in variants.items():
        spec = input_spec(cfg.input, dtype=variant.input["dtype"]).model_copy(
            update={"scale": variant.input["scale"], "zero_point": variant.input["zero_point"]}
        )
        entry = entry_for(
            variant.path,
            version=f"eval-{mode}",
            labels=labels,
            input_spec=spec,
            output=variant.output,
        )
        clf = classifier(entry, variant.path, num_threads=cfg.threads)
        val_probs = score_files(clf, val_bytes)
        temperature = calibrate.fit_temperature(calibrate.log_probs(val_probs), y_va)
        clf.entry = clf.entry.model_copy(update={"temperature": temperature})
        test_probs = score_files(clf, test_bytes)
        val_cal = softmax(calibrate.log_probs(val_probs), temperature)
        results[mode] = {
            "temperature": temperature,
            "entry": entry,
            "spec": spec,
            "val_probs": val_cal,
            "test_probs": test_probs,
            "test_raw": metrics.summarize(
                softmax(calibrate.log_probs(test_probs) * temperature), y_te, labels
            ),
        }
    timings["evaluate_s"] = time.monotonic() - t0

    summary_metrics: dict[str, Any] = {}
    bins = cfg.calibrate.ece_bins
    for name, r in results.items():
        r["test"] = metrics.summarize(r["test_probs"], y_te, labels, bins=bins)
        summary_metrics[name] = {
            **_brief(r["test"]),
            "ece_uncalibrated": round(r["test_raw"]["ece"], 4),
            "temperature": r["temperature"],
            "agreement_with_float": round(agreement(r["test_probs"], keras_test), 4),
            "size_bytes": variants[name].size if name in variants else None,
        }
        tracker.metrics(
            {
                f"test.{name}.accuracy": r["test"]["accuracy"],
                f"test.{name}.macro_f1": r["test"]["macro_f1"],
                f"test.{name}.ece": r["test"]["ece"],
                f"test.{name}.agreement_with_float": summary_metrics[name]["agreement_with_float"],
            }
        )

    # --- calibration: the uncertain threshold on int8 validation scores ----------------------
    int8 = results["int8"]
    thr = calibrate.choose_threshold(
        int8["val_probs"],
        y_va,
        target_accuracy=cfg.calibrate.target_accuracy,
        max_threshold=cfg.calibrate.max_threshold,
    )
    test_conf = int8["test_probs"].max(axis=1)
    covered = test_conf >= thr.threshold
    test_pred = int8["test_probs"].argmax(axis=1)
    uncertain = {
        "threshold": thr.threshold,
        "target_accuracy": cfg.calibrate.target_accuracy,
        "val_coverage": round(thr.coverage, 4),
        "val_accuracy_decided": round(thr.accuracy_covered, 4),
        "test_coverage": round(float(covered.mean()), 4),
        "test_accuracy_decided": round(
            float((test_pred[covered] == y_te[covered]).mean()) if covered.any() else 0.0, 4
        ),
        "tradeoff_val": calibrate.tradeoff(
            int8["val_probs"], y_va, [0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
        ),
    }
    tracker.metrics(
        {
            "uncertain.threshold": thr.threshold,
            "uncertain.test_coverage": uncertain["test_coverage"],
            "uncertain.test_accuracy_decided": uncertain["test_accuracy_decided"],
        }
    )

    # --- gate --------------------------------------------------------------------------------
    gate = quantize.gate(keras_test.argmax(axis=1), test_pred, y_te, cfg.quantize.gate)
    tracker.metrics({"gate.agreement": gate.agreement, "gate.accuracy_drop": gate.accuracy_drop})
    tracker.tags({"gate": "passed" if gate.passed else "failed"})
    log.info(gate.message())

    # --- pictures and files ------------------------------------------------------------------
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    plots.confusion_png(
        np.array(int8["test"]["confusion"]),
        labels,
        plot_dir / "confusion_int8.png",
        f"int8 on the test split: accuracy {int8['test']['accuracy']:.3f}, "
        f"macro-F1 {int8['test']['macro_f1']:.3f}",
    )
    (plot_dir / "confusion_int8.json").write_text(
        json.dumps({"labels": labels, "rows_true_cols_predicted": int8["test"]["confusion"]})
    )
    (plot_dir / "confusion_float.json").write_text(
        json.dumps(
            {"labels": labels, "rows_true_cols_predicted": results["keras"]["test"]["confusion"]}
        )
    )
    plots.reliability_png(
        {
            "int8, T=1": metrics.reliability(
                softmax(calibrate.log_probs(int8["test_probs"]) * int8["temperature"]), y_te, bins
            ),
            f"int8, T={int8['temperature']:.2f}": metrics.reliability(
                int8["test_probs"], y_te, bins
            ),
        },
        plot_dir / "reliability_int8.png",
        "reliability on the test split",
    )
    _, hardest = plots.mistakes_png(
        images=pixels[te],
        probs=int8["test_probs"],
        y_true=y_te,
        labels=labels,
        names=[ds.items[i].path for i in te],
        path=plot_dir / "hardest_mistakes_int8.png",
    )
    variants_info = {
        mode: {
            "size_bytes": v.size,
            "input": v.input,
            "output": v.output,
            **(
                {"integer_only": v.integer_only, "float_ops": v.float_ops} if mode == "int8" else {}
            ),
        }
        for mode, v in variants.items()
    }
    edgetpu_path, edgetpu_note = (None, "disabled (quantize.edgetpu: false)")
    if cfg.quantize.edgetpu:
        edgetpu_path, edgetpu_note = quantize.compile_edgetpu(variants["int8"].path, tflite_dir)
    variants_info["int8"]["edgetpu"] = edgetpu_note

    int8_sha = int8["entry"].sha256
    version = f"v{datetime.now(UTC):%Y%m%d}-{int8_sha[:8]}"
    summary: dict[str, Any] = {
        "version": version,
        "dataset_fingerprint": ds.fingerprint,
        "git_commit": commit,
        "data": ds.report,
        "test": summary_metrics,
        "gate": {
            "passed": gate.passed,
            "message": gate.message(),
            "max_accuracy_drop": cfg.quantize.gate.max_accuracy_drop,
            "min_agreement": cfg.quantize.gate.min_agreement,
        },
        "uncertain": uncertain,
        "variants": variants_info,
        "hardest_mistakes": hardest,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }

    # --- MLflow: artifacts, registration -----------------------------------------------------
    golden_idx = pick_golden(
        int8["test_probs"],
        y_te,
        per_class=cfg.registry.golden_per_class,
        threshold=thr.threshold,
    )
    golden = golden_samples(
        golden_idx,
        names=[ds.items[i].path for i in te],
        images=test_bytes,
        probs=int8["test_probs"],
        y_true=y_te,
        labels=labels,
    )
    manifest_metrics = {
        "split": "test",
        "test_images": len(te),
        # The served artifact's headline figures, where registry listings look first.
        "accuracy": summary_metrics["int8"]["accuracy"],
        "macro_f1": summary_metrics["int8"]["macro_f1"],
        "int8": summary_metrics["int8"],
        "float": summary_metrics["keras"],
        "agreement_int8_float": round(gate.agreement, 4),
        "uncertain": {k: v for k, v in uncertain.items() if k != "tradeoff_val"},
        "integer_only": variants["int8"].integer_only,
        "gate": summary["gate"],
    }
    summary["manifest_metrics"] = manifest_metrics
    write_report(run_dir, summary, labels)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _log_artifacts(tracker, run_dir)
    registered = tracker.register("tflite/model_int8.tflite", gate_passed=gate.passed)
    summary["mlflow"] = {"run_id": tracker.run_id, "registered_version": registered}

    result = RunResult(run_dir, summary, gate, tracker.run_id, timings=timings)
    if cfg.registry.uri is None:
        log.info("registry.uri is null: not publishing")
        tracker.end()
        return result
    # The gate decides; publish() raises GateError with the reason when it failed.
    entry = publish(
        cfg.registry.uri,
        variants["int8"].path,
        version=version,
        gate=gate,
        labels=labels,
        input_spec=int8["spec"],
        output=int8["entry"].output,
        metrics=manifest_metrics,
        temperature=int8["temperature"],
        uncertain_threshold=thr.threshold,
        dataset_fingerprint=ds.fingerprint,
        mlflow_run_id=tracker.run_id,
        source_config=cfg.dump(),
        golden=golden,
        aliases=cfg.registry.aliases,
        extra_files={"edgetpu": edgetpu_path} if edgetpu_path else None,
        signing_key=cfg.registry.signing_key,
    )
    tracker.tags({"published_version": entry.version, "registry": cfg.registry.uri})
    tracker.end()
    result.published_version = entry.version
    summary["published"] = {"version": entry.version, "registry": cfg.registry.uri}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return result


def _log_artifacts(tracker: Tracker, run_dir: Path) -> None:
    """Everything in the run folder but the SavedModels (kept locally for re-conversion; the
    TFLite files are the product)."""
    for child in sorted(run_dir.iterdir()):
        if child.name.startswith("saved_model"):
            continue
        if child.is_dir():
            tracker.mlflow.log_artifacts(str(child), artifact_path=child.name)
        else:
            tracker.mlflow.log_artifact(str(child))
