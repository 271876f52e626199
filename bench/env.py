"""The pieces every live benchmark needs: a private Mosquitto, the simulator, quiet logs."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from ioagent.logs import configure_logging
from tests.broker import Broker

LONDON = ZoneInfo("Europe/London")


def quiet_logs() -> None:
    """Warnings only, on stderr: the daemon's info lines would swamp the bench's output."""
    configure_logging("warning", "console", stream=sys.stderr)


@contextlib.contextmanager
def mosquitto(workdir: Path, *extra_config: str) -> Iterator[Broker]:
    """A Mosquitto of our own on a free loopback port (see tests/broker.py)."""
    broker = Broker(workdir=workdir / "mosquitto", extra_config=list(extra_config))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def peak_now_tariff(now: datetime | None = None) -> dict[str, object]:
    """A fixed window 6 to 8 hours away, so only the benchmark's own slots make it off-peak."""
    local = (now or datetime.now(LONDON)).astimezone(LONDON)
    start = (local + timedelta(hours=6)).strftime("%H:%M")
    end = (local + timedelta(hours=8)).strftime("%H:%M")
    return {"offpeak_start": start, "offpeak_end": end, "round_to_half_hour": False}
