"""The runner's counters and per-stage wall time: logged at exit, written by `--stats-json`,
read by the benchmark."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

STAGES = ("decode", "preprocess", "invoke", "decide", "telemetry", "act")


@dataclass
class Stats:
    """Per-stage wall time, for the log at exit and the benchmark."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames: int = 0
    decisions: int = 0
    bad_frames: int = 0
    telemetry_errors: int = 0
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None
    """When the frame loop ended (shutdown's flush is not the loop's time)."""

    def summary(self) -> dict[str, Any]:
        elapsed = (self.ended or time.perf_counter()) - self.started
        frames = max(1, self.frames)
        return {
            "frames": self.frames,
            "decisions": self.decisions,
            "bad_frames": self.bad_frames,
            "telemetry_errors": self.telemetry_errors,
            "elapsed_s": round(elapsed, 4),
            "decisions_per_s": round(self.decisions / elapsed, 3) if elapsed else None,
            "stage_ms": {k: round(v * 1000 / frames, 4) for k, v in self.seconds.items()},
        }
