"""Clocks for daemon-level tests: the wall clock moved to a chosen instant.

Most daemon tests run on the wall clock, so a CI run meets whatever tariff boundary the time of
day brings: a run at 05:29:50 saw the legacy night end in the middle of a test that said no
payload may change (CI, stop 20). ``IOAGENT_TEST_START`` (an ISO instant, e.g.
``2026-12-02T05:29:45Z``) starts the wall clock of *every* test at that instant, in the daemon
and in the simulator fixture alike, so that such a test can be found before CI finds it; see
docs/reliability.md, "At a chosen time of day".
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ioagent.simulator.state import SimulatorState
from ioagent.timeutil import parse_iso, utc_now

LONDON = ZoneInfo("Europe/London")
START_VARIABLE = "IOAGENT_TEST_START"

_suite_offset = timedelta(0)


def suite_now() -> datetime:
    """The wall clock, or, with ``IOAGENT_TEST_START``, the clock moved to it at the test's start."""
    return utc_now() + _suite_offset


def start_test_clock() -> None:
    """Called before each test (tests/conftest.py): moves ``suite_now`` to the chosen start."""
    global _suite_offset
    start = os.environ.get(START_VARIABLE)
    _suite_offset = parse_iso(start) - utc_now() if start else timedelta(0)


def quiet_afternoon() -> datetime:
    """Today at 14:10 London: more than two hours from every boundary of every product (05:30,
    12:00, 23:30) and from the quiet seconds of :00/:30, for tests that must not meet one."""
    today = utc_now().astimezone(LONDON).date()
    return datetime.combine(today, time(14, 10), LONDON).astimezone(UTC)


class ShiftedClock:
    """The wall clock moved to a chosen instant; ``jump_to`` moves it on (daemon and simulator)."""

    def __init__(self, start: datetime, state: SimulatorState) -> None:
        # Offsets from the simulator's own base clock (the wall clock, or ``suite_now``), so that
        # the daemon and the simulator show the same instant.
        self.base = state.clock
        self.state = state
        self.offset = timedelta(0)
        self.jump_to(start)

    def __call__(self) -> datetime:
        return self.base() + self.offset

    def jump_to(self, instant: datetime) -> None:
        self.offset = instant - self.base()
        self.state.set_time_offset(self.offset.total_seconds())

    def real(self, instant: datetime) -> float:
        """The real (time.time) instant at which the shifted clock shows ``instant``."""
        return utc_now().timestamp() + (instant - self()).total_seconds()


def real_time(instant: datetime) -> float:
    """The real (time.time) instant at which ``suite_now`` shows ``instant``."""
    return instant.timestamp() - _suite_offset.total_seconds()
