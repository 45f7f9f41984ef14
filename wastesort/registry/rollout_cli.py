"""The rollout part of `wastesort registry`: `promote --rollout PERCENT [--force]`, the
rollout shown by `list`/`show`, and `rollout-check`.

    wastesort registry --registry URI promote production v2 --rollout 10   # 10% of the bins
    wastesort registry --registry URI promote production v2 --rollout 100  # everyone
    wastesort registry --registry URI rollback production --reason "..."   # ends it
    wastesort registry --registry URI rollout-check --telemetry URI [--json]

`rollout-check` exits 0 when it changed nothing (no rollout, not enough data, the cohort is
fine), 1 when it aborted the rollout (rolled the alias back), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from wastesort.manifest import DEFAULT_ALIAS
from wastesort.registry.rollout import Thresholds, describe, run_check

if TYPE_CHECKING:
    from wastesort.manifest import Alias, Manifest
    from wastesort.registry.registry import Registry

EXIT_OK, EXIT_ABORTED = 0, 1
TELEMETRY_ENV = "WASTESORT_TELEMETRY"


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError("a rollout is more than 0 and at most 100 percent")
    return value


def add_promote_options(promote: argparse.ArgumentParser) -> None:
    """`--rollout PERCENT` and `--force` on `registry promote`."""
    promote.add_argument(
        "--rollout",
        type=_percent,
        metavar="PERCENT",
        help="give the version to this share of devices first (a stable hash of the device "
        "id); 100 completes a rollout in progress",
    )
    promote.add_argument(
        "--pilot",
        action="append",
        default=[],
        metavar="DEVICE_ID",
        help="with --rollout: this device gets the version whatever its hash (repeat for more)",
    )
    promote.add_argument(
        "--force",
        action="store_true",
        help="start a first rollout although the registry is still schema 1 (devices that "
        "read only schema 1 then stop updating until the rollout ends)",
    )


def add_parser(actions: Any) -> None:
    """`registry rollout-check`."""
    defaults = Thresholds()
    check = actions.add_parser(
        "rollout-check",
        help="compare a rollout's cohort with the other devices; roll back when it does worse",
    )
    check.add_argument(
        "--telemetry",
        default=os.environ.get(TELEMETRY_ENV),
        help=f"heartbeats: s3://bucket/telemetry or a folder of <device>/heartbeat.json "
        f"(default: {TELEMETRY_ENV})",
    )
    check.add_argument("--alias", default=DEFAULT_ALIAS)
    check.add_argument(
        "--min-devices",
        type=int,
        default=defaults.min_devices,
        help=f"fresh heartbeats needed in the cohort and in the rest ({defaults.min_devices})",
    )
    check.add_argument(
        "--stale-minutes", type=float, default=defaults.stale_minutes, help="ignore older beats"
    )
    check.add_argument("--json", dest="check_json", action="store_true", help="print JSON")


def promote(args: argparse.Namespace, registry: Registry) -> int:
    """`registry promote`: move the alias (staged with `--rollout`) and say where it is."""
    manifest = registry.promote(
        args.alias,
        args.version,
        reason=args.reason,
        rollout=args.rollout,
        force=args.force,
        pilots=args.pilot,
    )
    print(f"{args.alias} -> {args.version}" + rollout_note(manifest.aliases[args.alias]))
    return EXIT_OK


def rollout_note(state: Alias) -> str:
    """` (rollout: 10% of devices since ..., stable v1)`, or nothing without a rollout."""
    return f" (rollout: {describe(state.rollout)})" if state.rollout else ""


def in_progress(manifest: Manifest) -> list[str]:
    """One line per alias with a rollout in progress (`show` prints them)."""
    return [
        f"{name}: {state.version}{rollout_note(state)}; without a device id: "
        f"{state.version_for(None)}"
        for name, state in manifest.aliases.items()
        if state.rollout is not None
    ]


def aliases_on(manifest: Manifest, version: str) -> list[str]:
    """The aliases that give `version` to a reader without a device id, and `alias@10%` for a
    rollout that gives it to a cohort."""
    names = []
    for name, state in manifest.aliases.items():
        if state.version_for(None) == version:
            names.append(name)
        elif state.version == version and state.rollout is not None:
            names.append(f"{name}@{state.rollout.percent or 0:g}%")
    return names


def run(args: argparse.Namespace, registry: Registry) -> int:
    """`registry promote` and `registry rollout-check`."""
    return promote(args, registry) if args.action == "promote" else check(args, registry)


def check(args: argparse.Namespace, registry: Registry) -> int:
    """`registry rollout-check`: evaluate, abort when the cohort does worse, print the verdict."""
    from wastesort.errors import RegistryError  # noqa: PLC0415
    from wastesort.fleet import FleetError, open_store, read_heartbeats  # noqa: PLC0415

    if not args.telemetry:
        raise RegistryError(f"rollout-check needs --telemetry URI (or {TELEMETRY_ENV})")
    if args.min_devices < 1:
        raise RegistryError("--min-devices must be at least 1")
    try:
        beats = read_heartbeats(open_store(args.telemetry))
    except FleetError as exc:
        raise RegistryError(f"cannot read heartbeats: {exc}") from None
    limits = Thresholds(min_devices=args.min_devices, stale_minutes=args.stale_minutes)
    verdict = run_check(registry, beats, alias=args.alias, thresholds=limits)
    if args.json or args.check_json:
        print(json.dumps(verdict.to_dict(), indent=2))
    else:
        print(render(verdict.to_dict()))
    return EXIT_ABORTED if verdict.rolled_back else EXIT_OK


def render(verdict: dict[str, Any]) -> str:
    """A few lines: what is rolled out, the two groups, the verdict and why."""
    if verdict["action"] == "none":
        return f"{verdict['alias']}: no rollout in progress; nothing to check"
    lines = [
        f"{verdict['alias']}: rollout of {verdict['version']} to {verdict['percent']:g}% "
        f"(stable {verdict['stable_version']})"
    ]
    for name in ("cohort", "rest"):
        group = verdict[name]
        refused = group.get("self_test_failed")
        lines.append(
            f"  {name:<6} {group.get('n', 0)} device(s)"
            f"  errors {_share(group.get('error_share'))}"
            f"  uncertain {_share(group.get('uncertain_share'))}"
            f"  drift {_share(group.get('drift_share'))}"
            + (f"  refused {', '.join(refused)}" if refused else "")
        )
    outcome = {
        "ok": "ok: the cohort does no worse than the rest",
        "not_enough_data": "not enough data: no action",
        "abort": "ABORT: rolled back to " + str(verdict["stable_version"])
        if verdict["rolled_back"]
        else "ABORT (not rolled back)",
    }[verdict["action"]]
    lines.append(outcome)
    lines += [f"  - {reason}" for reason in verdict["reasons"]]
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
