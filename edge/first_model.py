"""A bin with no model to serve yet starts anyway, says why, and keeps trying.

A new device offline, a full disk, a registry that refuses its first model: exiting would only
have systemd restart it every few seconds, for ever, with nothing in the heartbeat. Instead the
service comes up, reports the condition (heartbeat `model.first_install`, `last_error`, the
log, systemd's STATUS), and tries the first install again with bounded exponential backoff and
jitter (`model.install_retry_s` up to `model.install_retry_max_s`), answering SIGTERM and
pinging the watchdog while it waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.telemetry.uploader import backoff_delay

if TYPE_CHECKING:
    from edge.config import ModelConfig
    from edge.updater import Updater
    from wastesort.classifier import Classifier

log = logging.getLogger(__name__)


class FirstModel:
    """The retries of a first install that failed once already (`failure`)."""

    def __init__(
        self,
        updater: Updater,
        failure: BaseException,
        *,
        base_s: float,
        cap_s: float,
        rng: Callable[[float, float], float] | None = None,
    ) -> None:
        self.updater = updater
        self.base_s = base_s
        self.cap_s = cap_s
        self.rng = rng
        self.since = time.time()
        self.attempts = 0
        self.error = ""
        self.next_attempt_at: float | None = None
        self._failed(failure)

    def _failed(self, exc: BaseException) -> None:
        self.attempts += 1
        self.error = f"{type(exc).__name__}: {exc}"
        log.debug("first install failed", exc_info=exc)

    def describe(self) -> str:
        return f"no model to serve yet (attempt {self.attempts} failed): {self.error}"

    def status(self) -> dict[str, Any]:
        """The heartbeat's `model.first_install` while there is no model."""
        return {
            "since": self.since,
            "attempts": self.attempts,
            "error": self.error,
            "next_attempt_at": self.next_attempt_at,
        }

    def wait(
        self,
        stop: threading.Event,
        *,
        tick: Callable[[], None],
        report: Callable[[str], None],
    ) -> Classifier | None:
        """Back off, try again, until a model is installed or `stop` is set (SIGTERM).

        Args:
            stop: set to give up (the classifier is then None).
            tick: called at least every second while waiting (the watchdog).
            report: told of each failure (the heartbeat's last_error and the log).

        Returns:
            the installed model's classifier, or None when stopped first.
        """
        while True:
            delay = backoff_delay(self.attempts, base=self.base_s, cap=self.cap_s, rng=self.rng)
            self.next_attempt_at = time.time() + delay
            report(f"{self.describe()}; retrying in {delay:.3g} s")
            deadline = time.monotonic() + delay
            while (left := deadline - time.monotonic()) > 0:
                tick()
                if stop.wait(min(left, 1.0)):
                    return None
            if stop.is_set():
                return None
            try:
                return self.updater.start()
            except Exception as exc:  # anything: a full disk, no network, no credentials yet
                self._failed(exc)


def start_model(
    updater: Updater, config: ModelConfig, *, once: bool
) -> tuple[Classifier | None, FirstModel | None]:
    """The model to serve at start, or (a service with none) the retries that will find one.

    Raises:
        Exception: with `once` (a trial), whatever kept the first model from installing.
    """
    try:
        return updater.start(), None
    except Exception as exc:
        if once:
            raise
        retries = FirstModel(
            updater, exc, base_s=config.install_retry_s, cap_s=config.install_retry_max_s
        )
        return None, retries
