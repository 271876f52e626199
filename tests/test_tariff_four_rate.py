"""The product families' rules, table-driven (docs/tariff.md lists every rule tested here).

Times are UTC; in winter Europe/London is UTC, so the local times of the docs read directly.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioagent.config import TariffSettings
from ioagent.kraken.types import AT_HOME, AWAY, BOOST, SMART, CompletedDispatch, Dispatch
from ioagent.tariff import four_rate
from ioagent.tariff.evidence import OBSERVATION, evidence_from
from ioagent.tariff.rules import TariffRules
from ioagent.tariff.signals import Family, ProductRules, evaluate, timeline, transitions
from ioagent.tariff.windows import Window

LONDON = ZoneInfo("Europe/London")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def slot(start: str, end: str, type_: str = SMART, location: str | None = None) -> Dispatch:
    return Dispatch(start=utc(start), end=utc(end), type=type_, kwh=None, location=location)


def seen(*instants: str) -> list[Window]:
    """Evidence: the device reported SMART_CONTROL_IN_PROGRESS at these instants."""
    return evidence_from([], [utc(i) for i in instants])


def product(
    family: Family = "four_rate",
    smart_offpeak: str = "auto",
    allowance_counts: str = "planned",
    allowance_hours: float = 6.0,
    allowance_measure: str = "half_hours",
    across_noon: str = "split",
) -> ProductRules:
    settings = TariffSettings.model_validate(
        {
            "smart_offpeak": smart_offpeak,
            "allowance_counts": allowance_counts,
            "allowance_hours": allowance_hours,
            "allowance_measure": allowance_measure,
            "across_noon": across_noon,
        }
    )
    return ProductRules.from_settings(settings, family, None)


FOUR = product()
FOUR_PLANNED = product(smart_offpeak="planned")
LEGACY = product("legacy")

OVERNIGHT = slot("2026-01-14 23:30", "2026-01-15 05:30")  # 12 half-hours: the whole allowance
EVENING = slot("2026-01-15 19:30", "2026-01-15 20:15")

# (rules, plan, evidence, now, home offpeak, car offpeak, confidence)
STATE_CASES = [
    pytest.param(FOUR, [], [], "2026-01-15 23:30", True, False, "guaranteed", id="R1-window-start"),
    pytest.param(
        FOUR, [], [], "2026-01-16 05:29:59", True, False, "guaranteed", id="R1-window-last-second"
    ),
    pytest.param(
        FOUR, [], [], "2026-01-16 05:30", False, False, "none", id="R1-window-end-is-peak"
    ),
    pytest.param(
        FOUR,
        [EVENING],
        seen("2026-01-15 19:31"),
        "2026-01-15 19:45",
        True,
        True,
        "charging",
        id="R3-confirmed-slot",
    ),
    pytest.param(
        FOUR,
        [EVENING],
        seen("2026-01-15 19:31"),
        "2026-01-15 20:20",
        True,
        True,
        "charging",
        id="R3-whole-half-hour-touched",
    ),
    pytest.param(
        FOUR,
        [EVENING],
        seen("2026-01-15 19:31"),
        "2026-01-15 20:30",
        False,
        False,
        "none",
        id="R3-next-half-hour-std",
    ),
    pytest.param(
        FOUR,
        [EVENING],
        [],
        "2026-01-15 19:45",
        False,
        True,
        "planned",
        id="R6-charging-mode-unconfirmed-no-bonus",
    ),
    pytest.param(
        FOUR_PLANNED,
        [EVENING],
        [],
        "2026-01-15 19:45",
        True,
        True,
        "planned",
        id="R6-planned-mode-bonus",
    ),
    pytest.param(
        FOUR,
        [slot("2026-01-15 13:00", "2026-01-15 14:00")],
        [],
        "2026-01-15 13:40",
        False,
        True,
        "planned",
        id="R6-planned-never-charged",
    ),
    pytest.param(
        FOUR,
        [OVERNIGHT, slot("2026-01-15 11:00", "2026-01-15 12:00")],
        seen("2026-01-15 11:01"),
        "2026-01-15 11:15",
        False,
        False,
        "none",
        id="R2-R4-allowance-used-overnight",
    ),
    pytest.param(
        FOUR,
        [OVERNIGHT, slot("2026-01-15 12:00", "2026-01-15 13:00")],
        seen("2026-01-15 12:01"),
        "2026-01-15 12:15",
        True,
        True,
        "charging",
        id="R2-new-period-at-noon",
    ),
    pytest.param(
        FOUR,
        [OVERNIGHT],
        [],
        "2026-01-15 01:00",
        True,
        True,
        "guaranteed",
        id="R2-in-window-car-cheap",
    ),
    pytest.param(
        FOUR,
        [slot("2026-01-15 17:00", "2026-01-15 18:00", BOOST)],
        [],
        "2026-01-15 17:10",
        False,
        False,
        "none",
        id="R5-boost-outside-window",
    ),
    pytest.param(
        FOUR,
        [slot("2026-01-16 01:00", "2026-01-16 02:00", BOOST)],
        [],
        "2026-01-16 01:10",
        True,
        False,
        "guaranteed",
        id="R5-boost-inside-window",
    ),
    pytest.param(
        FOUR,
        [slot("2026-01-15 19:00", "2026-01-15 20:00", location=AWAY)],
        seen("2026-01-15 19:05"),
        "2026-01-15 19:10",
        False,
        False,
        "none",
        id="R7-running-away-stops",
    ),
    pytest.param(
        FOUR,
        [slot("2026-01-15 19:00", "2026-01-15 20:00", location="UNABLE_TO_IDENTIFY")],
        seen("2026-01-15 19:05"),
        "2026-01-15 19:10",
        True,
        True,
        "charging",
        id="R7-unable-to-identify-counts",
    ),
    pytest.param(
        FOUR,
        [slot("2026-01-15 19:00", "2026-01-15 20:00", location=AT_HOME)],
        seen("2026-01-15 19:05"),
        "2026-01-15 19:10",
        True,
        True,
        "charging",
        id="R7-at-home",
    ),
    pytest.param(
        LEGACY,
        [EVENING],
        [],
        "2026-01-15 19:45",
        True,
        True,
        "planned",
        id="legacy-planned-default",
    ),
    pytest.param(
        LEGACY,
        [EVENING],
        seen("2026-01-15 19:31"),
        "2026-01-15 19:45",
        True,
        True,
        "charging",
        id="legacy-confirmed",
    ),
    pytest.param(
        product("legacy", "charging"),
        [EVENING],
        [],
        "2026-01-15 19:45",
        False,
        True,
        "planned",
        id="legacy-charging-mode",
    ),
    pytest.param(
        LEGACY,
        [OVERNIGHT, slot("2026-01-15 11:00", "2026-01-15 12:00")],
        [],
        "2026-01-15 11:15",
        True,
        True,
        "planned",
        id="legacy-no-allowance",
    ),
    pytest.param(
        LEGACY,
        [slot("2026-01-15 17:00", "2026-01-15 18:00", BOOST)],
        [],
        "2026-01-15 17:10",
        False,
        False,
        "none",
        id="legacy-boost",
    ),
    pytest.param(
        LEGACY,
        [slot("2026-01-15 19:00", "2026-01-15 20:00", location=AWAY)],
        [],
        "2026-01-15 19:10",
        False,
        False,
        "none",
        id="legacy-running-away",
    ),
    pytest.param(
        product("other"),
        [EVENING],
        seen("2026-01-15 19:31"),
        "2026-01-15 19:45",
        False,
        False,
        "none",
        id="other-fixed-window-only",
    ),
    pytest.param(
        product("other"), [], [], "2026-01-16 00:00", True, True, "guaranteed", id="other-window"
    ),
]


@pytest.mark.parametrize(
    ("rules", "plan", "evidence", "now", "home", "car", "confidence"), STATE_CASES
)
def test_state(
    rules: ProductRules,
    plan: list[Dispatch],
    evidence: list[Window],
    now: str,
    home: bool,
    car: bool,
    confidence: str,
) -> None:
    state = evaluate(rules, plan, evidence, utc(now))
    assert (state.offpeak, state.ev_offpeak, state.confidence) == (home, car, confidence)


def test_completed_slot_relabelled_away_still_used_allowance() -> None:
    # 19:00-22:00 ran and was relabelled AWAY afterwards: it still counts (R7), so with the
    # overnight smart charge the allowance runs out at 01:00, not at 04:00.
    away = slot("2026-01-15 19:00", "2026-01-15 22:00", location=AWAY)
    night = slot("2026-01-15 23:30", "2026-01-16 05:30")
    evidence = evidence_from(
        [CompletedDispatch(away.start, away.end, -7.0, None, AWAY)], [utc("2026-01-16 00:01")]
    )
    state = evaluate(FOUR, [away, night], evidence, utc("2026-01-16 00:30"))
    assert state.allowance is not None
    assert state.allowance.exhausted_at == utc("2026-01-16 02:30")
    late = evaluate(FOUR, [away, night], evidence, utc("2026-01-16 03:00"))
    assert (late.offpeak, late.ev_offpeak, late.confidence) == (True, False, "guaranteed")


def test_allowance_runs_out_in_the_middle_of_a_slot() -> None:
    long_slot = slot("2026-01-15 13:00", "2026-01-15 21:00")  # 8 h, 16 half-hours
    evidence = seen("2026-01-15 13:01")
    before = evaluate(FOUR, [long_slot], evidence, utc("2026-01-15 18:45"))
    assert (before.offpeak, before.ev_offpeak) == (True, True)
    assert before.next_transition == utc("2026-01-15 19:00")
    assert before.offpeak_end == utc("2026-01-15 19:00")
    assert before.allowance is not None
    assert before.allowance.exhausted_at == utc("2026-01-15 19:00")
    assert before.allowance.used == pytest.approx(6.0)
    assert before.allowance.remaining == pytest.approx(0.0)
    after = evaluate(FOUR, [long_slot], evidence, utc("2026-01-15 19:00"))
    assert (after.offpeak, after.ev_offpeak, after.confidence) == (False, False, "none")
    assert after.dispatching, "the car still charges, at its standard rate"
    flips = transitions(FOUR, [long_slot], evidence, utc("2026-01-15 18:00"), timedelta(hours=4))
    assert [(t.at, t.offpeak, t.ev_offpeak, t.confidence, t.dispatching) for t in flips] == [
        (utc("2026-01-15 19:00"), False, False, "none", True),
        (utc("2026-01-15 21:00"), False, False, "none", False),
    ]


def test_slot_across_noon_is_split_at_noon() -> None:
    # 11 half-hours used overnight; 11:00-13:00 has one half-hour left before noon, then a new
    # period starts: 11:00 cheap, 11:30 standard, 12:00 and 12:30 cheap.
    plan = [
        slot("2026-01-15 00:00", "2026-01-15 05:30"),
        slot("2026-01-15 11:00", "2026-01-15 13:00"),
    ]
    evidence = seen("2026-01-15 00:01", "2026-01-15 11:01")
    got = [
        evaluate(FOUR, plan, evidence, utc(f"2026-01-15 {at}")).ev_offpeak
        for at in ("11:00", "11:30", "12:00", "12:30")
    ]
    assert got == [True, False, True, True]
    at_noon = evaluate(FOUR, plan, evidence, utc("2026-01-15 12:00"))
    assert at_noon.allowance is not None
    assert at_noon.allowance.used == pytest.approx(0.5)
    assert at_noon.allowance.resets_at == utc("2026-01-16 12:00")


# R2a and R8, open: the default and the alternative of each key. Overnight 00:00-05:10 touches 11
# half-hours (5.5 h as half-hours, 5 h 10 as slot time), then two 20-minute morning slots.
SHORT_MORNING = [
    slot("2026-01-15 00:00", "2026-01-15 05:10"),
    slot("2026-01-15 11:00", "2026-01-15 11:20"),
    slot("2026-01-15 11:30", "2026-01-15 11:50"),
]
# The docs' noon example: 11 half-hours overnight, then 11:00-13:00 across noon.
ACROSS_NOON = [
    slot("2026-01-15 00:00", "2026-01-15 05:30"),
    slot("2026-01-15 11:00", "2026-01-15 13:00"),
]


@pytest.mark.parametrize(
    ("rules", "plan", "now", "car", "used", "remaining"),
    [
        pytest.param(
            FOUR, SHORT_MORNING, "11:35", False, 6.0, 0.0, id="R2a-half-hours-11:30-beyond"
        ),
        pytest.param(
            product(allowance_measure="slot_time"),
            SHORT_MORNING,
            "11:35",
            True,
            35 / 6,
            1 / 6,
            id="R2a-slot-time-11:30-within",
        ),
        pytest.param(FOUR, ACROSS_NOON, "11:15", True, 6.0, 0.0, id="R8-split-before-noon"),
        pytest.param(FOUR, ACROSS_NOON, "12:15", True, 0.5, 5.5, id="R8-split-new-period"),
        pytest.param(
            product(across_noon="slot_start"),
            ACROSS_NOON,
            "11:15",
            True,
            6.0,
            0.0,
            id="R8-slot-start-before-noon",
        ),
        pytest.param(
            product(across_noon="slot_start"),
            ACROSS_NOON,
            "12:15",
            False,
            0.0,
            6.0,
            id="R8-slot-start-after-noon-is-the-old-period",
        ),
        pytest.param(
            product(across_noon="slot_start"),
            [slot("2026-01-15 12:30", "2026-01-15 13:30")],
            "13:15",
            True,
            1.0,
            5.0,
            id="R8-slot-start-a-slot-after-noon-is-the-new-period",
        ),
    ],
)
def test_open_allowance_rules_follow_their_keys(
    rules: ProductRules, plan: list[Dispatch], now: str, car: bool, used: float, remaining: float
) -> None:
    state = evaluate(rules, plan, [], utc(f"2026-01-15 {now}"))
    assert state.allowance is not None
    assert state.ev_offpeak == car
    assert (state.allowance.used, state.allowance.remaining) == (
        pytest.approx(used),
        pytest.approx(remaining),
    )


def test_allowance_used_counts_half_hours_as_they_start() -> None:
    plan = [EVENING]
    evidence = seen("2026-01-15 19:31")
    values = []
    for at in ("19:29:59", "19:30", "19:59:59", "20:00", "21:00"):
        allowance = evaluate(FOUR, plan, evidence, utc(f"2026-01-15 {at}")).allowance
        assert allowance is not None
        values.append((allowance.used, allowance.remaining))
    assert values == [(0.0, 6.0), (0.5, 5.5), (0.5, 5.5), (1.0, 5.0), (1.0, 5.0)]
    state = evaluate(FOUR, plan, evidence, utc("2026-01-15 19:40"))
    assert state.next_transition == utc("2026-01-15 20:00"), "remaining flips at 20:00"
    assert state.allowance is not None and state.allowance.exhausted_at is None


@pytest.mark.parametrize(
    ("counts", "exhausted"),
    [("planned", "2026-01-15 20:30"), ("charging", None)],
)
def test_ended_unconfirmed_slot_and_the_allowance(counts: str, exhausted: str | None) -> None:
    # 13:00-18:00 (10 half-hours) was planned and never charged; 19:30-20:30 follows.
    plan = [
        slot("2026-01-15 13:00", "2026-01-15 18:00"),
        slot("2026-01-15 19:30", "2026-01-15 20:30"),
    ]
    rules = product(allowance_counts=counts)
    state = evaluate(rules, plan, seen("2026-01-15 19:31"), utc("2026-01-15 19:45"))
    assert state.allowance is not None
    assert state.allowance.exhausted_at == (utc(exhausted) if exhausted else None)
    # 10 half-hours before + 19:30 = 5.5 h used when unconfirmed time counts.
    assert state.allowance.used == pytest.approx(5.5 if counts == "planned" else 0.5)


def test_confirmation_by_completed_record_at_any_location() -> None:
    plan = [slot("2026-01-15 19:00", "2026-01-15 20:00")]
    # Octopus sends it with source null; the agent has classified it by the planned slot.
    record = CompletedDispatch(
        utc("2026-01-15 19:00"), utc("2026-01-15 19:20"), -2.0, None, AWAY, kind=SMART
    )
    state = evaluate(FOUR, plan, evidence_from([record], []), utc("2026-01-15 19:25"))
    # The slot itself carries no location here; the record confirms charging.
    assert (state.offpeak, state.confidence) == (True, "charging")


@pytest.mark.parametrize(
    ("instant", "start", "reset"),
    [
        ("2026-01-15 11:59:59", "2026-01-14 12:00", "2026-01-15 12:00"),
        ("2026-01-15 12:00", "2026-01-15 12:00", "2026-01-16 12:00"),
        # BST: local noon is 11:00Z.
        ("2026-07-01 10:59", "2026-06-30 11:00", "2026-07-01 11:00"),
        # Autumn DST (25 Oct 2026): 12:00 BST -> 12:00 GMT is 25 h.
        ("2026-10-25 06:00", "2026-10-24 11:00", "2026-10-25 12:00"),
        # Spring DST (29 Mar 2026): 12:00 GMT -> 12:00 BST is 23 h.
        ("2026-03-29 06:00", "2026-03-28 12:00", "2026-03-29 11:00"),
    ],
)
def test_allowance_period_is_local_noon_to_noon(instant: str, start: str, reset: str) -> None:
    rules = FOUR.four_rate
    assert four_rate.period_start(utc(instant), rules) == utc(start)
    assert four_rate.next_reset(utc(instant), rules) == utc(reset)


def test_spring_dst_night_window_and_allowance() -> None:
    # 28/29 Mar 2026: the window is 23:30 GMT to 05:30 BST = 23:30Z-04:30Z (5 h); a smart charge
    # over all of it uses 10 half-hours, leaving 2 for the morning.
    night = slot("2026-03-28 23:30", "2026-03-29 04:30")
    morning = slot("2026-03-29 08:00", "2026-03-29 10:00")
    evidence = seen("2026-03-28 23:31", "2026-03-29 08:01")
    assert evaluate(FOUR, [night], evidence, utc("2026-03-29 04:29")).confidence == "guaranteed"
    assert evaluate(FOUR, [night], evidence, utc("2026-03-29 04:30")).confidence == "none"
    cheap = [
        evaluate(FOUR, [night, morning], evidence, utc(f"2026-03-29 {at}")).offpeak
        for at in ("08:00", "08:30", "09:00", "09:30")
    ]
    assert cheap == [True, True, False, False]


def test_autumn_dst_period_has_25_hours_and_window_7() -> None:
    rules = FOUR.four_rate
    cells = four_rate.grid(
        [], [], rules, utc("2026-10-25 06:00"), utc("2026-10-25 06:00"), utc("2026-10-25 13:00")
    )
    period = [c for c in cells if c.period == utc("2026-10-24 11:00")]
    assert len(period) == 50, "25 hours of half-hours"
    assert sum(1 for c in period if c.in_window) == 14, "23:30 BST to 05:30 GMT is 7 h"


def test_evidence_window_is_one_observation() -> None:
    assert evidence_from([], [utc("2026-01-15 19:31")]) == [
        Window(utc("2026-01-15 19:31"), utc("2026-01-15 19:31") + OBSERVATION)
    ]


def test_smart_offpeak_auto_follows_the_family() -> None:
    assert product("four_rate").smart_offpeak == "charging"
    assert product("legacy").smart_offpeak == "planned"
    assert product("four_rate", "planned").smart_offpeak == "planned"
    assert product("legacy", "charging").smart_offpeak == "charging"


def test_legacy_timeline_matches_todays_rules() -> None:
    rules = LEGACY
    segments = timeline(
        rules,
        [EVENING],
        [],
        utc("2026-01-15 12:00"),
        utc("2026-01-15 12:00"),
        utc("2026-01-16 12:00"),
    )
    assert [(s.start, s.end, s.home_offpeak) for s in segments if s.home_offpeak] == [
        (utc("2026-01-15 19:30"), utc("2026-01-15 20:30"), True),
        (utc("2026-01-15 23:30"), utc("2026-01-16 05:30"), True),
    ]
    assert rules.legacy == TariffRules(LONDON, time(23, 30), time(5, 30))


# --- properties -------------------------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@st.composite
def four_rate_case(draw: st.DrawFn) -> tuple[list[Dispatch], list[Window], datetime]:
    now = draw(instants)
    plan = []
    evidence = []
    for _ in range(draw(st.integers(0, 6))):
        start = now + timedelta(minutes=draw(st.integers(-30 * 60, 30 * 60)))
        end = start + timedelta(minutes=draw(st.integers(1, 8 * 60)))
        plan.append(
            Dispatch(
                start=start,
                end=end,
                type=draw(st.sampled_from([SMART, SMART, BOOST])),
                kwh=None,
                location=draw(st.sampled_from([None, AT_HOME, AWAY])),
            )
        )
        if draw(st.booleans()):
            evidence.append(Window(start, start + OBSERVATION))
    return plan, evidence, now


def _key(
    rules: ProductRules, plan: list[Dispatch], evidence: list[Window], at: datetime
) -> tuple[object, ...]:
    s = evaluate(rules, plan, evidence, at)
    used = None if s.allowance is None else (s.allowance.used, s.allowance.resets_at)
    return (s.offpeak, s.ev_offpeak, s.confidence, s.dispatching, used)


@settings(max_examples=150, deadline=None)
@given(
    case=four_rate_case(),
    family=st.sampled_from(["four_rate", "legacy"]),
    measure=st.sampled_from(["half_hours", "slot_time"]),
    noon=st.sampled_from(["split", "slot_start"]),
)
def test_nothing_changes_before_next_transition(
    case: tuple[list[Dispatch], list[Window], datetime], family: Family, measure: str, noon: str
) -> None:
    plan, evidence, now = case
    rules = product(family, allowance_measure=measure, across_noon=noon)
    state = evaluate(rules, plan, evidence, now)
    if state.next_transition is None:
        return
    before = _key(rules, plan, evidence, now)
    midpoint = now + (state.next_transition - now) / 2
    assert _key(rules, plan, evidence, midpoint) == before
    just_before = state.next_transition - timedelta(seconds=1)
    if just_before > now:
        assert _key(rules, plan, evidence, just_before) == before
    assert _key(rules, plan, evidence, state.next_transition) != before
    flips = transitions(rules, plan, evidence, now, timedelta(hours=30))
    assert all(a.at < b.at for a, b in pairwise(flips))
    for flip in flips[:4]:
        got = evaluate(rules, plan, evidence, flip.at)
        assert (got.offpeak, got.ev_offpeak, got.confidence, got.dispatching) == (
            flip.offpeak,
            flip.ev_offpeak,
            flip.confidence,
            flip.dispatching,
        )


@settings(max_examples=100, deadline=None)
@given(case=four_rate_case())
def test_car_is_never_cheaper_than_the_allowance(
    case: tuple[list[Dispatch], list[Window], datetime],
) -> None:
    plan, evidence, now = case
    rules = FOUR.four_rate
    cells = four_rate.grid(plan, evidence, rules, now, now, now + timedelta(days=2))
    per_period: dict[datetime, int] = {}
    for cell in cells:
        if cell.ev_offpeak:
            per_period[cell.period] = per_period.get(cell.period, 0) + 1
        assert not (cell.home_offpeak and not cell.in_window and not cell.ev_offpeak)
    assert all(count <= 12 for count in per_period.values())


@settings(max_examples=150, deadline=None)
@given(
    case=four_rate_case(),
    measure=st.sampled_from(["half_hours", "slot_time"]),
    noon=st.sampled_from(["split", "slot_start"]),
)
def test_no_period_spends_more_than_its_allowance_and_slot_time_never_more_than_half_hours(
    case: tuple[list[Dispatch], list[Window], datetime], measure: str, noon: str
) -> None:
    plan, evidence, now = case
    rules = product(allowance_measure=measure, across_noon=noon).four_rate
    cells = four_rate.grid(plan, evidence, rules, now, now, now + timedelta(days=2))
    spent: dict[datetime, timedelta] = {}
    for cell in cells:
        if cell.within_allowance and cell.uses_allowance:
            spent[cell.period] = spent.get(cell.period, timedelta(0)) + cell.counted
        assert cell.counted <= cell.end - cell.start
    assert all(total <= rules.allowance for total in spent.values())
    whole = product(allowance_measure="half_hours", across_noon=noon)
    minutes = product(allowance_measure="slot_time", across_noon=noon)
    by_half_hours = evaluate(whole, plan, evidence, now).allowance
    by_minutes = evaluate(minutes, plan, evidence, now).allowance
    assert by_half_hours is not None and by_minutes is not None
    assert by_minutes.used <= by_half_hours.used + 1e-9


def test_an_unclassified_completed_record_is_no_charging_evidence() -> None:
    # Type unknown (source null, no planned slot seen): it is never guessed to be smart charging.
    plan = [slot("2026-01-15 19:00", "2026-01-15 20:00")]
    record = CompletedDispatch(utc("2026-01-15 19:00"), utc("2026-01-15 19:20"), -2.0, None, AWAY)
    state = evaluate(FOUR, plan, evidence_from([record], []), utc("2026-01-15 19:25"))
    assert (state.offpeak, state.confidence) == (False, "planned")
