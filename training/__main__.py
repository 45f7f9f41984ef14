"""`python -m training run --config training/configs/default.yaml [key=value ...]`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from training.config import ConfigError, load_config
from wastesort.errors import WastesortError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train, evaluate, quantize, track and publish")
    run_p.add_argument("--config", help="a YAML config (training/configs/*.yaml)")
    run_p.add_argument("overrides", nargs="*", help="key.path=value, e.g. train.head.epochs=5")
    run_p.add_argument("--print-config", action="store_true", help="print the resolved config")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg.dump(), indent=2))
        return 0
    logging.basicConfig(
        level=os.environ.get("LOGLEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    from training.data import DataError  # noqa: PLC0415
    from training.pipeline import run  # noqa: PLC0415 (TensorFlow, after validation)
    from training.quantize import GateError  # noqa: PLC0415

    try:
        result = run(cfg)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GateError as exc:
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


if __name__ == "__main__":
    sys.exit(main())
