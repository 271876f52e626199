"""When the daemon reads the device state to confirm charging; which half-hours Victron takes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ioagent.config import TariffSettings
from ioagent.kraken.types import BOOST, SMART, Dispatch
from ioagent.runtime.daemon import charge_check_due
from ioagent.tariff.evidence import OBSERVATION
from ioagent.tariff.product import Family
from ioagent.tariff.signals import ProductRules, home_windows, timeline, victron_confidences
from ioagent.tariff.windows import Window

START = datetime(2026, 1, 15, 19, 30, tzinfo=UTC)
SLOT = Dispatch(START, START + timedelta(hours=1), SMART, 7.0)


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


@pytest.mark.parametrize(
    ("plan", "evidence", "checked", "now", "due"),
    [
        ([SLOT], [], set(), at(-30), at(1)),  # a minute after the slot starts
        ([SLOT], [], {at(1)}, at(1.5), at(11)),  # then every 10 minutes
        ([SLOT], [], set(), at(35), at(31)),  # started mid-slot: at once
        ([SLOT], [Window(at(1), at(1) + OBSERVATION)], set(), at(2), None),  # confirmed
        ([SLOT], [], set(), at(61), None),  # ended
        ([Dispatch(START, at(60), BOOST, 7.0)], [], set(), at(-1), None),  # not smart
        ([SLOT], [], {at(1), at(11), at(21), at(31), at(41), at(51)}, at(52), None),
    ],
)
def test_charge_check_due(
    plan: list[Dispatch],
    evidence: list[Window],
    checked: set[datetime],
    now: datetime,
    due: datetime | None,
) -> None:
    assert charge_check_due(plan, evidence, checked, now) == due


@pytest.mark.parametrize(
    ("setting", "family", "fixed", "expected"),
    [
        ("auto", "four_rate", False, ("charging",)),
        ("auto", "legacy", False, ("charging", "planned")),
        ("planned", "four_rate", True, ("charging", "planned", "guaranteed")),
        ("charging", "legacy", False, ("charging",)),
    ],
)
def test_victron_confidences(
    setting: str, family: Family, fixed: bool, expected: tuple[str, ...]
) -> None:
    assert victron_confidences(setting, family, include_fixed_window=fixed) == expected


@pytest.mark.parametrize(
    ("family", "smart_offpeak", "setting", "written"),
    [
        # The battery's choice is its own, whatever the home's rule ([tariff] smart_offpeak).
        ("four_rate", "auto", "planned", True),
        ("four_rate", "auto", "auto", False),
        ("four_rate", "planned", "charging", False),
        ("legacy", "charging", "auto", True),
        ("legacy", "charging", "charging", False),
        ("legacy", "auto", "auto", True),
    ],
)
def test_victron_takes_the_planned_half_hours_it_is_told_to(
    family: Family, smart_offpeak: str, setting: str, written: bool
) -> None:
    # An unconfirmed smart slot, 19:30-20:30, within the allowance; the night window is
    # left out (include_fixed_window off).
    settings = TariffSettings.model_validate({"smart_offpeak": smart_offpeak})
    rules = ProductRules.from_settings(settings, family, None)
    now = at(-60)
    segments = timeline(rules, [SLOT], [], now, now, now + timedelta(hours=24))
    confidences = victron_confidences(setting, family, include_fixed_window=False)
    expected = [Window(SLOT.start, SLOT.end)] if written else []
    assert home_windows(segments, confidences) == expected
