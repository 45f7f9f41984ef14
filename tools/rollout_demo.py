"""A staged rollout, aborted, on a copy of the bundled registry and three simulated bins.

    .venv/bin/python -m tools.rollout_demo

The bins are real edge updaters (download, verify, self-test) with device ids `bin-1..3`; at 34 %
only `bin-2` is in the cohort. Its heartbeat reports errors after the update, the rollout check
(the CLI, as an operator runs it) aborts, and the bins follow the alias back. Nothing outside a
temporary folder is touched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edge.config import ModelConfig
from edge.health import Health
from edge.updater import Updater
from wastesort.classifier import BUNDLED_REGISTRY
from wastesort.registry import Registry

DEVICES = ("bin-1", "bin-2", "bin-3")
PERCENT = "34"


def cli(*args: str) -> int:
    """Run `wastesort` as an operator would, echoing the command and its output."""
    print(f"$ wastesort {' '.join(args)}")
    done = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "wastesort", *args], capture_output=True, text=True, check=False
    )
    for line in (done.stdout + done.stderr).strip().splitlines():
        print(f"  {line}")
    print(f"  (exit {done.returncode})")
    return done.returncode


def fleet_line(updaters: dict[str, Updater], what: str) -> None:
    served = ", ".join(f"{d}={u.status()['version']}" for d, u in updaters.items())
    print(f"-- {what}: {served}")


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="rollout-demo-"))
    try:
        registry_dir = root / "registry"
        shutil.copytree(BUNDLED_REGISTRY, registry_dir)
        registry = Registry.from_uri(registry_dir)
        stable = registry.resolve("production").version
        new = next(v for v in reversed(registry.manifest().versions) if v != stable)
        reg = ("registry", "--registry", str(registry_dir))
        updaters = {
            d: Updater(
                ModelConfig(registry=str(registry_dir), num_threads=1), root / d, device_id=d
            )
            for d in DEVICES
        }
        for updater in updaters.values():
            updater.start()
        fleet_line(updaters, "three bins started")

        cli(*reg, "promote", "production", new, "--rollout", PERCENT)
        cli(*reg, "promote", "production", new, "--rollout", PERCENT, "--force")
        cli(*reg, "list")
        for updater in updaters.values():
            updater.check()
        fleet_line(updaters, "after one poll each")

        telemetry = root / "telemetry"
        for device, updater in updaters.items():
            health = Health(device, root / device)
            status = updater.status()
            health.provide("model", lambda status=status: {**status, "serving": status["version"]})
            if status["version"] == new:
                health.error("servo stalled: item stuck in the chute")
            (telemetry / device).mkdir(parents=True)
            (telemetry / device / "heartbeat.json").write_text(json.dumps(health.snapshot()))
        print(f"-- heartbeats written under {telemetry.name}/<device>/heartbeat.json")

        cli(*reg, "rollout-check", "--telemetry", str(telemetry))  # 3 of each by default
        cli(*reg, "rollout-check", "--telemetry", str(telemetry), "--min-devices", "1")
        for updater in updaters.values():
            updater.check()
        fleet_line(updaters, "after the next poll")
        cli(*reg, "history", "production")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
