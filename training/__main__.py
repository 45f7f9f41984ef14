"""`python -m training run --config training/configs/default.yaml [key=value ...]`,
`python -m training compare --champion URI --challenger URI [--sources ...] [--captures SOURCE]`
and `python -m training explain --run RUN_DIR IMAGE... [--out DIR]`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from training.config import ConfigError, load_config
from wastesort.errors import WastesortError


def _logging() -> None:
    logging.basicConfig(
        level=os.environ.get("LOGLEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train, evaluate, quantize, track and publish")
    run_p.add_argument("--config", help="a YAML config (training/configs/*.yaml)")
    run_p.add_argument("overrides", nargs="*", help="key.path=value, e.g. train.head.epochs=5")
    run_p.add_argument("--print-config", action="store_true", help="print the resolved config")
    cmp_p = sub.add_parser(
        "compare", help="two published versions on the same photos, with the verdict"
    )
    cmp_p.add_argument("--champion", required=True, help="e.g. models@production")
    cmp_p.add_argument("--challenger", required=True, help="e.g. models@candidate")
    cmp_p.add_argument(
        "--config",
        help="a YAML config whose data and champion sections to use "
        "(default: the challenger's recorded data section and the default rule)",
    )
    cmp_p.add_argument(
        "--sources",
        nargs="+",
        metavar="NAME|NAME=DIR",
        help="only these sources of the data config, and/or dataset folders scored whole",
    )
    cmp_p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    cmp_p.add_argument(
        "--captures",
        metavar="SOURCE",
        help="also the shadow report on these field photos (capture store, dataset folder or "
        "folder of images; see `wastesort shadow`)",
    )
    cmp_p.add_argument("--json", type=Path, help="also write the comparison here")
    exp_p = sub.add_parser(
        "explain", help="Grad-CAM overlays of a run's float model on photos, top classes written"
    )
    exp_p.add_argument("--run", required=True, type=Path, help="a run folder (runs/<name>-<time>)")
    exp_p.add_argument("images", nargs="+", type=Path, help="photos to explain")
    exp_p.add_argument("--out", type=Path, help="where the overlays go (default: RUN/explain)")
    exp_p.add_argument("--top", type=int, default=3, help="classes written on each overlay")
    args = parser.parse_args(argv)
    commands = {"compare": _compare, "explain": _explain}
    return commands.get(args.command, _run)(args)


def _run(args: argparse.Namespace) -> int:
    """Exit 0 when done, 2 on a bad config or data, 3 when the gate or the verdict refuses."""
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg.dump(), indent=2))
        return 0
    _logging()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    from training.compare import VerdictError  # noqa: PLC0415
    from training.data import DataError  # noqa: PLC0415
    from training.pipeline import run  # noqa: PLC0415 (TensorFlow, after validation)
    from training.quantize import GateError  # noqa: PLC0415

    try:
        result = run(cfg)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (GateError, VerdictError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (WastesortError, MlflowException) as exc:  # registry or tracking server said no
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print((result.run_dir / "model_card.md").read_text())
    print(f"run folder: {result.run_dir}")
    if result.published_version:
        print(f"published {result.published_version} to {cfg.registry.uri}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    """Exit 0 when the challenger passes the rule, 3 when it does not, 2 on bad input."""
    _logging()
    from training.compare import compare_versions, render  # noqa: PLC0415
    from training.data import DataError  # noqa: PLC0415
    from wastesort import Classifier  # noqa: PLC0415

    names = [s for s in args.sources or () if "=" not in s]
    folders = dict(s.split("=", 1) for s in args.sources or () if "=" in s)
    try:
        base: dict[str, Any] | None = None
        if args.config is None:  # the challenger's own sources and split
            recorded = Classifier.load(args.challenger).entry.source_config or {}
            base = {"data": recorded["data"]} if recorded.get("data") else None
        cfg = load_config(args.config, args.set, base=base)
        result = compare_versions(
            args.champion,
            args.challenger,
            data=cfg.data,
            rule=cfg.champion,
            only=names if args.sources else None,
            folders=folders,
            captures=args.captures,
        )
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WastesortError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(render(result)))
    for warning in result.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["verdict"]["passed"] else 3


def _explain(args: argparse.Namespace) -> int:
    """Exit 0 when every overlay is written, 2 when the run has no float model or a photo
    cannot be read (checked before TensorFlow starts)."""
    from wastesort.preprocess import load_image  # noqa: PLC0415

    run_dir = args.run
    if args.top < 1:
        print(f"error: --top {args.top}: write at least one class", file=sys.stderr)
        return 2
    if not (run_dir / "model.weights.h5").is_file():
        print(f"error: {run_dir} holds no float model (model.weights.h5)", file=sys.stderr)
        return 2
    for path in args.images:
        try:
            load_image(path.read_bytes())
        except (OSError, WastesortError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            print(f"error: {path}: {reason}", file=sys.stderr)
            return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.explain import ExplainError, explain_files, load_run  # noqa: PLC0415

    try:
        run = load_run(run_dir)
        done = explain_files(run, args.images, args.out or run_dir / "explain", top=args.top)
    except ExplainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the overlays' folder cannot be written
        print(f"error: {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for item in done:
        ranked = ", ".join(f"{label} {score:.2f}" for label, score in item.top)
        print(f"{item.path} -> {item.overlay} ({ranked})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
