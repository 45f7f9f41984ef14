"""One run, end to end: data -> train -> convert -> evaluate (per source) -> calibrate -> gate ->
champion -> track -> publish. Each step lives in its own module; this file only puts them in
order."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training import calibrate, compare, plots, quantize, reference, summary
from training.config import Config
from training.data import load_dataset, write_split
from training.evaluate import Splits, keras_logits, score_keras, score_variants, source_tables
from training.publish import golden_for_run, publish_run, version_id
from training.report import write_report
from training.tracking import Tracker, git_commit

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    gate: quantize.GateResult
    mlflow_run_id: str | None = None
    published_version: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    """The champion/challenger verdict (`passed`, `reasons`, `forced`)."""


def _setup(cfg: Config) -> None:
    import tensorflow as tf  # noqa: PLC0415 (after the config is known to be valid)

    if cfg.threads:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(cfg.threads, 2))


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    timings[key] = time.monotonic() - t0


def run(cfg: Config, *, run_dir: Path | None = None) -> RunResult:  # noqa: PLR0915 (the steps)
    """Train, evaluate, quantize, compare with the champion, track and (if the gate and the
    verdict pass, or the verdict is forced) publish the challenger.

    Raises:
        DataError: the data sources cannot make a dataset.
        GateError: int8 lost too much against float; everything is tracked, nothing published.
        VerdictError: the challenger does not beat the champion; tracked, nothing published.
    """
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = run_dir or Path(cfg.output_dir) / f"{cfg.name}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.dump(), indent=2))
    timings: dict[str, float] = {}
    _setup(cfg)
    from training.train import train  # noqa: PLC0415 (imports TensorFlow)

    with _timed(timings, "data_s"):
        ds, pixels = load_dataset(cfg)
        write_split(ds, run_dir / "split.csv")
        (run_dir / "data_report.json").write_text(json.dumps(ds.report, indent=2))
        (run_dir / "labels.txt").write_text("\n".join(ds.labels) + "\n")
    log.info("data: %s, fingerprint %s", ds.report["split_sizes"], ds.fingerprint[:12])

    with Tracker(cfg.mlflow, run_dir.name) as tracker:  # a run that raises ends FAILED
        tracker.params(cfg.dump())
        commit = git_commit()
        tags = {"dataset_fingerprint": ds.fingerprint, "git_commit": commit}
        tracker.tags(tags | {"backbone": cfg.model.backbone})
        tracker.mlflow.log_dict(ds.report, "data_report.json")

        with _timed(timings, "train_s"):
            step = itertools.count()
            trained = train(cfg, ds, pixels, hook=lambda row: tracker.epoch(row, next(step)))
        trained.model.save_weights(run_dir / "model.weights.h5")
        timings.update(trained.timings)
        (run_dir / "epochs.json").write_text(json.dumps(trained.epochs, indent=1))
        keras_out = keras_logits(trained.model, pixels, ds)  # validation, test, extra
        keras_test = keras_out[1]

        with _timed(timings, "convert_s"):
            tflite_dir, train_pixels = run_dir / "tflite", pixels[ds.indices("train")]
            variants = quantize.convert(
                trained.model, tflite_dir, cfg.quantize, train_pixels, seed=cfg.train.seed
            )

        # Every variant is scored through wastesort.Classifier, as serving will run it.
        bins = cfg.calibrate.ece_bins
        with _timed(timings, "evaluate_s"):
            splits = Splits.of(ds)
            keras = score_keras(keras_out, splits, bins=bins)
            by_variant = score_variants(
                variants, splits, cfg.input, bins=bins, num_threads=cfg.threads
            )
        scores, int8 = {"keras": keras, **by_variant}, by_variant["int8"]
        test_metrics = summary.test_section(scores, keras_test, variants)

        uncertain = calibrate.uncertain_threshold(
            int8.val_probs,
            splits.y_val,
            int8.test_probs,
            splits.y_test,
            cfg.calibrate,
            val_weights=splits.val_weights,
            val_sources=ds.sources_of("val"),
        )
        tables = source_tables(ds, scores, uncertain["threshold"])
        tracker.metrics(
            summary.tracked(scores, test_metrics, uncertain) | summary.by_source(tables)
        )

        int8_pred = int8.test_probs.argmax(axis=1)
        gate = quantize.gate(keras_test.argmax(axis=1), int8_pred, splits.y_test, cfg.quantize.gate)
        tracker.metrics(
            {"gate.agreement": gate.agreement, "gate.accuracy_drop": gate.accuracy_drop}
        )
        tracker.tags({"gate": "passed" if gate.passed else "failed"})
        log.info(gate.message())

        hardest = plots.run_plots(
            run_dir / "plots", int8=int8, float_model=keras, ds=ds, pixels=pixels, bins=bins
        )
        hardest_by_source = plots.source_mistakes(  # with the float model's Grad-CAM
            run_dir / "plots", int8=int8, ds=ds, pixels=pixels, model=trained.model
        )
        edgetpu_path, edgetpu_note = (None, "disabled (quantize.edgetpu: false)")
        if cfg.quantize.edgetpu:
            edgetpu_path, edgetpu_note = quantize.compile_edgetpu(variants["int8"].path, tflite_dir)
        version = version_id(int8.entry.sha256)
        with _timed(timings, "reference_s"):  # what drift reports compare the field with
            reference_path = reference.write(
                run_dir / "reference.npz",
                variants["int8"].path,
                int8,
                splits,
                seed=cfg.train.seed,
                meta={"version": version, "dataset_fingerprint": ds.fingerprint},
            )
        golden = golden_for_run(
            ds,
            int8,
            splits,
            per_class=cfg.registry.golden_per_class,
            threshold=uncertain["threshold"],
        )
        with _timed(timings, "champion_s"):  # the champion and this model, on the same photos
            challenger = compare.challenger_of(
                variants["int8"].path, int8, version, uncertain["threshold"]
            )
            photo_sets = [
                *compare.dataset_sets(ds),
                compare.golden_from_samples("challenger", golden),
            ]
            champion = compare.against_champion(
                cfg.champion, cfg.champion.uri or cfg.registry.uri, challenger, photo_sets
            )
        tracker.metrics(summary.champion_metrics(champion))
        tracker.tags(summary.champion_tags(champion))
        log.info("\n".join(compare.render(champion)))
        run_summary = summary.build(
            version=version,
            ds=ds,
            commit=commit,
            test=test_metrics,
            gate=gate,
            gate_cfg=cfg.quantize.gate,
            uncertain=uncertain,
            variants=variants,
            edgetpu=edgetpu_note,
            hardest=hardest,
            timings=timings,
            per_source=tables,
            champion=champion,
        )
        run_summary["hardest_by_source"] = hardest_by_source
        write_report(run_dir, run_summary, ds.labels)
        (run_dir / "summary.json").write_text(json.dumps(run_summary, indent=2, default=str))
        tracker.log_run_folder(run_dir)
        verdict = champion["verdict"]
        publishable = verdict["passed"] or bool(verdict.get("forced"))
        registered = tracker.register(
            "tflite/model_int8.tflite", gate_passed=gate.passed, verdict_passed=publishable
        )
        run_summary["mlflow"] = {"run_id": tracker.run_id, "registered_version": registered}
        result = RunResult(run_dir, run_summary, gate, tracker.run_id, timings=timings)
        result.verdict = verdict

        if cfg.registry.uri is None:
            log.info("registry.uri is null: not publishing")
        else:  # publish_run raises GateError or VerdictError, with the reason, when refused
            entry = publish_run(
                cfg,
                variants["int8"].path,
                version=version,
                gate=gate,
                verdict=verdict,
                int8=int8,
                golden=golden,
                labels=splits.labels,
                summary=run_summary,
                mlflow_run_id=tracker.run_id,
                edgetpu=edgetpu_path,
                reference=reference_path,
            )
            tracker.tags({"published_version": entry.version, "registry": cfg.registry.uri})
            result.published_version = entry.version
            run_summary["published"] = {"version": entry.version, "registry": cfg.registry.uri}
            (run_dir / "summary.json").write_text(json.dumps(run_summary, indent=2, default=str))
    result.timings["total_s"] = time.monotonic() - started
    return result
