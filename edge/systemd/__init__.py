"""What the runner shares with systemd: the unit file (`wastesort-edge.service`, installed as
docs/edge.md says) and the notify protocol it declares (`Type=notify`, `WatchdogSec=`)."""

from edge.systemd.notify import Watchdog

__all__ = ["Watchdog"]
