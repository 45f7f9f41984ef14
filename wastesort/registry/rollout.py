"""Staged rollout to the bins: who is in the cohort, how an alias is staged, and when to abort.

A device is in a rollout's cohort when a stable hash of its id falls under the percentage, so
the same bins go first every time and raising the percentage only adds bins. Resolution itself
is `Alias.version_for` (wastesort/manifest.py): the cohort gets the alias's new `version`, every
other device and every reader without a device id (API, CLI, deploy hook) the `stable_version`.

The abort check compares the cohort with the rest from the heartbeats the bins upload
(`wastesort.fleet`) and rolls the alias back, with the reason in its history, when the cohort
does worse. Pure functions over a manifest and heartbeats: the CLI and the scheduled Lambda
both call `run_check`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from wastesort.errors import RegistryError
from wastesort.fleet import DEFAULT_STALE_MINUTES, device_row, device_signals
from wastesort.manifest import DEFAULT_ALIAS, Alias, AliasEvent, Manifest, Rollout, utcnow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wastesort.registry.registry import Registry

BUCKETS = 10_000
"""Cohort granularity: 0.01 percentage points."""
_SALT = b"wastesort-rollout\0"
"""Fixed, so that a device's bucket never changes between rollouts or releases."""
REFUSAL_CODES = ("self_test_failed", "bad_signature", "model_failing")
"""Refusal codes (`model.refusals[version].code` in a heartbeat) that count as a failed
self-test of the new version on a cohort device."""

LISTED = 20
"""Device ids a verdict lists per group (the counts cover them all)."""

SCHEMA_EXPLANATION = (
    "a rollout needs manifest schema 2, and devices on releases that read only schema 1 refuse "
    "a schema-2 manifest whole (they stop updating until the alias is plain again): upgrade the "
    "fleet's software first (docs/ops.md, 'Staged rollout'), then pass --force"
)


def bucket(device_id: str) -> int:
    """The device's place in 0..9999, the same on every machine and in every release."""
    digest = hashlib.sha256(_SALT + device_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_cohort(device_id: str, percent: float) -> bool:
    """Whether `device_id` is among the first `percent` % of devices (0 <= percent <= 100)."""
    return bucket(device_id) < round(percent * BUCKETS / 100)


def check_percent(percent: float) -> float:
    """Raise RegistryError unless 0 < percent <= 100."""
    if not 0 < percent <= 100:
        raise RegistryError(
            f"rollout {percent:g}%: a rollout is more than 0 and at most 100 percent",
            code="rollout_refused",
        )
    return percent


def stage(
    manifest: Manifest,
    alias: str,
    version: str,
    percent: float,
    *,
    by: str,
    reason: str | None = None,
    force: bool = False,
    pilots: Sequence[str] = (),
) -> bool:
    """Start, widen or complete a rollout of `version` on `alias` (in place). `pilots` are
    device ids in the cohort whatever their hash (`Rollout.cohorts`; a widening adds them).

    Returns:
        False when this is a plain move (100 % with no rollout in progress): the caller moves
        the alias as any promote does.

    Raises:
        RegistryError: no alias yet, another version's rollout in progress, nothing to roll
            out, or a first rollout on a schema-1 registry without `force`.
    """
    check_percent(percent)
    manifest.entry(version)  # raises for an unknown version
    state = manifest.aliases.get(alias)
    rollout = state.rollout if state else None
    if rollout is None and percent >= 100:
        return False
    if state is None:
        raise _refused(f"no alias {alias!r} yet: promote without --rollout first")
    if rollout is not None and state.version != version:
        raise _refused(
            f"{alias}: the rollout of {state.version} is in progress ({describe(rollout)}); "
            f"complete it (--rollout 100) or roll it back first"
        )
    if rollout is None and state.version == version:
        raise _refused(f"{alias} already serves {version} to every device")
    if rollout is None and manifest.schema_version < 2 and not force:
        raise _refused(SCHEMA_EXPLANATION)
    why = f": {reason}" if reason else ""
    pilots = list(dict.fromkeys(pilots))  # in order, each once
    came_from = state.version
    if rollout is None:
        state.rollout = Rollout(
            stable_version=came_from,
            percent=percent,
            cohorts=pilots,
            started_at=utcnow(),
        )
        state.version = version
        note = f"rollout {percent:g}% (stable {came_from})"
    elif percent >= 100:
        state.rollout = None
        note = f"rollout complete (was {describe(rollout)})"
    else:
        note = f"rollout {rollout.percent or 0:g}% -> {percent:g}%"
        rollout.percent = percent
        rollout.cohorts = list(dict.fromkeys([*rollout.cohorts, *pilots]))
    if pilots and percent < 100:
        note += f", pilots {', '.join(pilots)}"
    event = AliasEvent(
        by=by, action="promote", from_version=came_from, to_version=version, reason=note + why
    )
    state.history.append(event)
    return True


def rollback_target(
    alias: str, state: Alias, rollout_of: str | None, reason: str | None
) -> tuple[str, str | None]:
    """Where a rollback of `alias` goes, and the reason to record: during a rollout the stable
    version (the rollout ends); otherwise the version the alias was last promoted from.

    Raises:
        RegistryError: `rollout_of` names a rollout no longer in progress, or there is no
            earlier version.
    """
    rollout = state.rollout
    if rollout_of and (rollout is None or state.version != rollout_of):
        raise _refused(f"{alias}: the rollout of {rollout_of} is no longer in progress")
    if rollout is not None and rollout.stable_version:
        why = f"; {reason}" if reason else ""
        return rollout.stable_version, f"ended the rollout of {state.version}{why}"
    previous = next(
        (
            e.from_version
            for e in reversed(state.history)
            if e.action == "promote"
            and e.to_version == state.version
            and e.from_version not in (None, state.version)
        ),
        None,
    )
    if previous is None:
        raise RegistryError(f"{alias!r} has no earlier version to roll back to")
    return previous, reason


def describe(rollout: Rollout) -> str:
    """`10% of devices [and 2 pilot devices] since <time>, stable v1`."""
    since = f" since {rollout.started_at.isoformat()}" if rollout.started_at else ""
    pilots = f" and {len(rollout.cohorts)} pilot device(s)" if rollout.cohorts else ""
    return f"{rollout.percent or 0:g}% of devices{pilots}{since}, stable {rollout.stable_version}"


def _refused(message: str) -> RegistryError:
    return RegistryError(message, code="rollout_refused")


# --- the abort check ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """When a cohort does worse than the rest (docs/ops.md, 'Staged rollout')."""

    min_devices: int = 3
    """Fresh heartbeats needed from cohort devices serving the new version, and from the rest."""
    error_margin: float = 0.2
    """Abort when the share of cohort devices with an error since the start exceeds the rest's
    by more than this."""
    uncertain_margin: float = 0.1
    """Abort when the cohort's mean `uncertain` share exceeds the rest's by more than this."""
    drift_margin: float = 0.25
    """Abort when the share of cohort devices whose drift verdict is `drift` exceeds the
    rest's by more than this."""
    self_test_failures: int = 1
    """Abort when this many cohort devices refused the new version (golden set, signature, a
    failure at run time), whatever the other numbers."""
    stale_minutes: float = DEFAULT_STALE_MINUTES
    """Heartbeats older than this are left out."""


@dataclass
class Verdict:
    """What the check found. `action`: `none`, `not_enough_data`, `ok` or `abort`."""

    alias: str
    action: Literal["none", "not_enough_data", "ok", "abort"]
    reasons: list[str] = field(default_factory=list)
    version: str | None = None
    stable_version: str | None = None
    percent: float | None = None
    cohort: dict[str, Any] = field(default_factory=dict)
    rest: dict[str, Any] = field(default_factory=dict)
    rolled_back: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _group(rows: list[dict[str, Any]], since: float) -> dict[str, Any]:
    """The figures compared: device count, error share, mean uncertain share, drift share."""
    shares = [r["uncertain_share"] for r in rows if r.get("uncertain_share") is not None]
    errored = [
        r for r in rows if r.get("errors") or (r.get("last_error_at") or float("-inf")) >= since
    ]
    drifting = [r for r in rows if r.get("drift") == "drift"]
    n = len(rows)
    return {
        "devices": [r["device"] for r in rows][:LISTED],
        "n": n,
        "error_share": round(len(errored) / n, 4) if n else None,
        "uncertain_share": round(sum(shares) / len(shares), 4) if shares else None,
        "drift_share": round(len(drifting) / n, 4) if n else None,
    }


def evaluate(
    manifest: Manifest,
    beats: dict[str, dict[str, Any]],
    *,
    alias: str = DEFAULT_ALIAS,
    thresholds: Thresholds | None = None,
    now: float | None = None,
) -> Verdict:
    """Compare the rollout's cohort with the rest of the devices that follow `alias`."""
    limits = thresholds or Thresholds()
    state = manifest.aliases.get(alias)
    rollout = state.rollout if state else None
    if state is None or rollout is None or rollout.stable_version is None:
        return Verdict(alias, "none", [f"no rollout in progress on {alias!r}"])
    verdict = Verdict(alias, "ok", version=state.version, percent=rollout.percent)
    verdict.stable_version = rollout.stable_version
    now = time.time() if now is None else now
    since = rollout.started_at.timestamp() if rollout.started_at else float("-inf")
    cohort, rest, failed = [], [], []
    for device, beat in sorted(beats.items()):
        row = {**device_row(device, beat, now, limits.stale_minutes * 60), **device_signals(beat)}
        if (row.get("alias") or DEFAULT_ALIAS) != alias:
            continue
        if not rollout.includes(device):
            if not row["stale"]:
                rest.append(row)
        elif (row.get("refused") or {}).get(state.version) in REFUSAL_CODES:
            failed.append(device)
        elif not row["stale"] and row["version"] == state.version:
            cohort.append(row)
    verdict.cohort, verdict.rest = _group(cohort, since), _group(rest, since)
    verdict.cohort["self_test_failed"] = failed
    if len(failed) >= limits.self_test_failures:
        verdict.reasons.append(
            f"{len(failed)} cohort device(s) refused {state.version}: {', '.join(failed)}"
        )
    elif min(len(cohort), len(rest)) < limits.min_devices:
        verdict.action = "not_enough_data"
        verdict.reasons.append(
            f"not enough data: {len(cohort)} cohort and {len(rest)} other fresh heartbeat(s), "
            f"{limits.min_devices} of each needed"
        )
        return verdict
    verdict.reasons += _worse(verdict.cohort, verdict.rest, limits)
    verdict.action = "abort" if verdict.reasons else "ok"
    return verdict


def _worse(cohort: dict[str, Any], rest: dict[str, Any], limits: Thresholds) -> list[str]:
    checks = (
        ("error_share", "share of devices with errors", limits.error_margin),
        ("uncertain_share", "uncertain share", limits.uncertain_margin),
        ("drift_share", "share of devices with a drift verdict", limits.drift_margin),
    )
    reasons = []
    for key, what, margin in checks:
        mine, theirs = cohort.get(key), rest.get(key)
        if mine is not None and theirs is not None and mine - theirs > margin:
            reasons.append(f"{what} {mine:.2f} vs {theirs:.2f} (margin {margin:g})")
    return reasons


def run_check(
    registry: Registry,
    beats: dict[str, dict[str, Any]],
    *,
    alias: str = DEFAULT_ALIAS,
    thresholds: Thresholds | None = None,
    by: str = "rollout-check",
    now: float | None = None,
) -> Verdict:
    """Evaluate, and on `abort` roll `alias` back to the stable version with the reasons
    recorded in its history. Only the rollout evaluated is rolled back: if it was completed
    or ended meanwhile, nothing is changed (`rolled_back` stays False)."""
    verdict = evaluate(registry.manifest(), beats, alias=alias, thresholds=thresholds, now=now)
    if verdict.action == "abort" and verdict.version is not None:
        reason = "rollout aborted by rollout-check: " + "; ".join(verdict.reasons)
        try:
            registry.rollback(alias, by=by, reason=reason, rollout_of=verdict.version)
        except RegistryError as exc:
            verdict.reasons.append(f"not rolled back: {exc.message}")
        else:
            verdict.rolled_back = True
    return verdict
