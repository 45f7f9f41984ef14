"""systemd's notify protocol, spoken by hand: the unit is `Type=notify` with `WatchdogSec=`
(edge/systemd/wastesort-edge.service), and one datagram per message needs no library."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Watchdog:
    """systemd's notify protocol: one datagram per message to $NOTIFY_SOCKET (no library).

    `WATCHDOG=1` is sent at most every half of $WATCHDOG_USEC, from the frame loop itself,
    so a wedged camera or interpreter gets the service restarted.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        self.address = address
        usec = int(env.get("WATCHDOG_USEC") or 0)
        self.interval = usec / 2e6 if usec else None
        self._last = 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, message: str) -> None:
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError as exc:
            log.debug("sd_notify %r failed: %s", message, exc)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def ping(self) -> None:
        if self.interval is None:
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")
