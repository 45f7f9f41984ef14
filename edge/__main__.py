"""`python -m edge run --config edge.yaml` (the service) or
`python -m edge run --source folder:DIR --once` (a trial, a test, a benchmark);
`python -m edge check --config edge.yaml` validates a config; `status` prints the last
heartbeat; `fleet --telemetry URI` tabulates every bin's uploaded heartbeat (edge/fleet.py)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge.config import ConfigError, EdgeConfig, env_overrides_present, load_config
from edge.sources import SourceError, parse_source


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="classify frames until stopped (or --once)")
    check = commands.add_parser("check", help="validate a config and print it resolved")
    status = commands.add_parser("status", help="print the last heartbeat (health.json)")
    for command in (run, check, status):
        command.add_argument("--config", type=Path, help="edge.yaml")
        command.add_argument("--state-dir", type=Path, help="model cache and telemetry queue")
    run.add_argument("--source", help="folder:DIR, image:PATH or camera[:INDEX]")
    run.add_argument("--once", action="store_true", help="process what the source has, exit")
    run.add_argument("--model", help="registry URI (overrides model.registry)")
    run.add_argument("--alias", help="alias to follow (overrides model.alias)")
    run.add_argument("--json", action="store_true", help="one JSON line per decision on stdout")
    run.add_argument("--stats-json", type=Path, help="write per-stage timings here at exit")
    fleet = commands.add_parser("fleet", help="the fleet's devices from their uploaded heartbeats")
    fleet.add_argument("--telemetry", required=True, help="s3://bucket/telemetry or a folder")
    fleet.add_argument("--stale-minutes", type=float, default=30.0, help="stale after (30)")
    fleet.add_argument("--expect", help="the version every bin should run (default: most run)")
    fleet.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.state_dir:
        overrides["state_dir"] = args.state_dir
    if getattr(args, "source", None):
        try:
            overrides["source"] = parse_source(args.source).model_dump(exclude_unset=True)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    model = {
        key: value
        for key, value in (
            ("registry", getattr(args, "model", None)),
            ("alias", getattr(args, "alias", None)),
        )
        if value
    }
    if model:
        overrides["model"] = model
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "fleet":
        return _fleet(args)
    try:
        config = load_config(args.config, **_overrides(args))
        key = config.model.public_key
        if key is not None and args.command != "status" and not key.is_file():
            raise ConfigError(f"model.public_key: {key} is not a readable file")
    except ConfigError as exc:
        print(f"edge: config error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if names := env_overrides_present():
        logging.getLogger("edge").info("settings from the environment: %s", ", ".join(names))
    if args.command == "check":
        print(config.model_dump_json(indent=2))
        return 0
    if args.command == "status":
        return _status(config)
    return _run(config, args)


def _fleet(args: argparse.Namespace) -> int:
    from edge.fleet import FleetError, run  # noqa: PLC0415

    if args.stale_minutes <= 0:
        print("edge: fleet: --stale-minutes must be positive", file=sys.stderr)
        return 2
    try:
        print(
            run(
                args.telemetry,
                stale_minutes=args.stale_minutes,
                as_json=args.json,
                expect=args.expect,
            )
        )
    except FleetError as exc:
        print(f"edge: fleet: {exc}", file=sys.stderr)
        return 2
    return 0


def _status(config: EdgeConfig) -> int:
    path = Path(config.state_dir) / "health.json"
    if not path.exists():
        print(f"edge: no heartbeat yet at {path}", file=sys.stderr)
        return 1
    print(path.read_text(), end="")
    return 0


def _run(config: EdgeConfig, args: argparse.Namespace) -> int:
    from edge.wiring import build_runner  # noqa: PLC0415  (the runtime loads only to run)
    from wastesort.errors import WastesortError  # noqa: PLC0415

    try:
        runner = build_runner(config, once=args.once, console=True if args.json else None)
    except (SourceError, WastesortError) as exc:
        print(f"edge: cannot start: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # e.g. no AWS credentials for an s3:// registry
        logging.getLogger("edge").debug("start failed", exc_info=True)
        print(f"edge: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    runner.install_signal_handlers()
    stats = runner.run()
    if args.stats_json:
        summary = stats.summary()
        clf = runner.classifier  # None: stopped before a first model was installed
        summary["model_version"] = clf.version if clf else None
        summary["runtime"] = clf.runtime.to_dict() if clf else None
        args.stats_json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
