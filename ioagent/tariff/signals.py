"""One entry point for every product family: the home's and the car's signals, as pure functions.

``evaluate(rules, plan, evidence, now)`` gives the state now and ``transitions`` every change
ahead. The family decides how the plan is read: ``legacy`` (``ioagent.tariff.rules``: the whole
house is cheap in any smart half-hour), ``four_rate`` (``ioagent.tariff.four_rate``: the
noon-to-noon car allowance and the home bonus) or ``other`` (not an Intelligent product: only
the fixed window is known). ``dispatching`` is the same for every family: any dispatch, exact
times.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import pairwise

from ioagent.config import TariffSettings
from ioagent.kraken.types import Dispatch
from ioagent.tariff import four_rate
from ioagent.tariff.evidence import Confidence, confirmed, counts, location_changes
from ioagent.tariff.four_rate import Allowance, FourRateRules, SmartOffpeak
from ioagent.tariff.product import Family
from ioagent.tariff.rules import TariffRules, capped_smart_windows, dispatch_windows, fixed_windows
from ioagent.tariff.windows import (
    DAY,
    Window,
    ceil_half_hour,
    floor_half_hour,
    merge,
    subtract,
)
from ioagent.timeutil import to_utc

LOOKAHEAD = timedelta(hours=48)


@dataclass(frozen=True)
class ProductRules:
    """The rules of the account's product family, with the settings that shape them."""

    family: Family
    legacy: TariffRules
    four_rate: FourRateRules

    @property
    def smart_offpeak(self) -> SmartOffpeak:
        return self.four_rate.smart_offpeak

    @classmethod
    def from_settings(
        cls, settings: TariffSettings, family: Family, device_capped: str | None
    ) -> ProductRules:
        """``[tariff] smart_offpeak = "auto"`` means ``charging`` on four-rate, ``planned``
        elsewhere (legacy billing never depended on the car drawing power)."""
        mode = settings.smart_offpeak
        if mode == "auto":
            mode = "charging" if family == "four_rate" else "planned"
        legacy = TariffRules.from_settings(settings, device_capped)
        return cls(
            family=family,
            legacy=legacy,
            four_rate=FourRateRules(
                zone=settings.zone,
                window_start=settings.start_time,
                window_end=settings.end_time,
                allowance_hours=settings.allowance_hours,
                smart_offpeak=mode,
                allowance_counts=settings.allowance_counts,
                allowance_measure=settings.allowance_measure,
                across_noon=settings.across_noon,
            ),
        )


@dataclass(frozen=True)
class Segment:
    """A stretch of time with one value of every rate signal."""

    start: datetime
    end: datetime
    home_offpeak: bool
    ev_offpeak: bool
    confidence: Confidence


@dataclass(frozen=True)
class Signals:
    """Everything published about the tariff at one instant (see docs/tariff.md)."""

    offpeak: bool
    ev_offpeak: bool
    confidence: Confidence
    dispatching: bool
    offpeak_end: datetime | None
    next_offpeak_start: datetime | None
    next_dispatch_start: datetime | None
    next_dispatch_end: datetime | None
    next_transition: datetime | None
    allowance: Allowance | None


@dataclass(frozen=True)
class Transition:
    at: datetime
    offpeak: bool
    ev_offpeak: bool
    confidence: Confidence
    dispatching: bool


# --- timelines per family --------------------------------------------------------------------


def _elementary(
    edges: Iterable[datetime], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    points = sorted({start, end, *(e for e in edges if start < e < end)})
    return list(pairwise(points))


def _inside(windows: Sequence[Window], instant: datetime) -> bool:
    return any(instant in w for w in windows)


def _intersect(first: Sequence[Window], second: Sequence[Window]) -> list[Window]:
    return subtract(first, subtract(first, second))


def _legacy(
    rules: ProductRules,
    plan: Sequence[Dispatch],
    evidence: Sequence[Window],
    now: datetime,
    start: datetime,
    end: datetime,
) -> list[Segment]:
    legacy = rules.legacy
    span_start, span_end = start - DAY, end + DAY
    fixed = fixed_windows(legacy, span_start, span_end)
    if rules.family == "other":
        smart: list[Window] = []
        sure: list[Window] = []
    else:
        smart = capped_smart_windows(plan, legacy, span_start, span_end, now=now)
        confirmed_slots = [s for s in plan if counts(s, now) and confirmed(s, evidence)]
        rounded = [
            Window(floor_half_hour(s.start, legacy.zone), ceil_half_hour(s.end, legacy.zone))
            if legacy.round_to_half_hour
            else Window(to_utc(s.start), to_utc(s.end))
            for s in confirmed_slots
        ]
        sure = _intersect(smart, merge(rounded))
    edges = [instant for w in (*fixed, *smart, *sure) for instant in (w.start, w.end)]
    segments = []
    for a, b in _elementary(edges, start, end):
        confidence: Confidence
        if _inside(fixed, a):
            confidence, home = "guaranteed", True
        elif _inside(sure, a):
            confidence, home = "charging", True
        elif _inside(smart, a):
            confidence, home = "planned", rules.smart_offpeak == "planned"
        else:
            confidence, home = "none", False
        # One rate for the whole house: the car charges at the home's rate.
        ev = confidence != "none"
        segments.append(Segment(a, b, home, ev, confidence))
    return segments


def _four_rate(
    rules: ProductRules,
    plan: Sequence[Dispatch],
    evidence: Sequence[Window],
    now: datetime,
    start: datetime,
    end: datetime,
) -> list[Segment]:
    cells = four_rate.grid(plan, evidence, rules.four_rate, now, start, end)
    return [
        Segment(c.start, c.end, c.home_offpeak, c.ev_offpeak, c.confidence)
        for c in cells
        if c.end > start
    ]


def _joined(segments: list[Segment]) -> list[Segment]:
    joined: list[Segment] = []
    for seg in segments:
        if joined and joined[-1].end == seg.start and _key(joined[-1]) == _key(seg):
            joined[-1] = replace(joined[-1], end=seg.end)
        else:
            joined.append(seg)
    return joined


def _key(seg: Segment) -> tuple[bool, bool, Confidence]:
    return (seg.home_offpeak, seg.ev_offpeak, seg.confidence)


def timeline(
    rules: ProductRules,
    plan: Iterable[Dispatch],
    evidence: Sequence[Window],
    now: datetime,
    start: datetime,
    end: datetime,
) -> list[Segment]:
    """Joined segments covering ``[start, end)`` (the first and last clipped to the range)."""
    now, start, end = to_utc(now), to_utc(start), to_utc(end)
    slots = list(plan)
    build = _four_rate if rules.family == "four_rate" else _legacy
    segments = build(rules, slots, evidence, now, start, end)
    clipped = [
        replace(s, start=max(s.start, start), end=min(s.end, end))
        for s in segments
        if s.end > start and s.start < end
    ]
    return _joined(clipped)


def home_windows(segments: Sequence[Segment], confidences: Iterable[Confidence]) -> list[Window]:
    """The merged stretches whose home confidence is one of ``confidences``.

    Chosen by the confidence alone, not by ``home_offpeak``: with ``[tariff] smart_offpeak``
    at ``charging`` (four-rate's default) a planned half-hour is not off-peak for the home yet,
    and a battery told to take ``planned`` half-hours must still get it. Every half-hour that
    is off-peak for the home has a confidence other than ``none``.
    """
    wanted = set(confidences) - {"none"}
    return merge(Window(s.start, s.end) for s in segments if s.confidence in wanted)


def victron_confidences(
    setting: str, family: Family, *, include_fixed_window: bool
) -> tuple[Confidence, ...]:
    """Which half-hours a home battery charges in: ``charging`` ones, ``planned`` ones too when
    widened (``auto``: on legacy, where a planned slot is billed cheap), and the night window
    with ``include_fixed_window``."""
    widened = setting == "planned" or (setting == "auto" and family != "four_rate")
    chosen: list[Confidence] = ["charging"]
    if widened:
        chosen.append("planned")
    if include_fixed_window:
        chosen.append("guaranteed")
    return tuple(chosen)


def _runs(segments: Sequence[Segment], home: bool) -> list[Window]:
    return merge(Window(s.start, s.end) for s in segments if s.home_offpeak == home and home)


def _key_of(state: Signals) -> tuple[object, ...]:
    allowance = state.allowance
    published = None if allowance is None else (allowance.used, allowance.resets_at)
    return (state.offpeak, state.ev_offpeak, state.confidence, state.dispatching, published)


def evaluate(
    rules: ProductRules, plan: Iterable[Dispatch], evidence: Sequence[Window], now: datetime
) -> Signals:
    """The signals at ``now``, looking :data:`LOOKAHEAD` ahead.

    ``next_transition`` is the first instant after ``now`` at which any signal or the
    allowance changes, including the end of a running ``AWAY`` slot, from which it counts.
    """
    now = to_utc(now)
    slots = list(plan)
    state = _evaluate_as_of(rules, slots, evidence, now)
    key = _key_of(state)
    upcoming = state.next_transition
    for change in location_changes(slots, now):
        if upcoming is not None and upcoming <= change:
            break
        later = _evaluate_as_of(rules, slots, evidence, change)
        if _key_of(later) != key:
            upcoming = change
            break
        upcoming = later.next_transition
    return replace(state, next_transition=upcoming)


def _evaluate_as_of(
    rules: ProductRules, slots: list[Dispatch], evidence: Sequence[Window], now: datetime
) -> Signals:
    horizon = now + LOOKAHEAD
    segments = timeline(rules, slots, evidence, now, now, horizon)
    current = segments[0]
    offpeak = _runs(segments, True)
    dispatch = dispatch_windows(slots, now, horizon)
    now_offpeak = next((w for w in offpeak if now in w), None)
    next_offpeak = next((w for w in offpeak if w.start > now), None)
    end_source = now_offpeak or next_offpeak
    now_dispatch = next((w for w in dispatch if now in w), None)
    next_dispatch = next((w for w in dispatch if w.start > now), None)
    dispatch_end = now_dispatch or next_dispatch
    # The last segment ends at the horizon only because the range does: not a change.
    changes = [s.start for s in segments[1:]]
    changes += [i for w in dispatch for i in (w.start, w.end) if i > now]
    allowance = None
    if rules.family == "four_rate":
        cells = four_rate.grid(slots, evidence, rules.four_rate, now, now, now + 2 * DAY)
        allowance = four_rate.allowance_at(cells, rules.four_rate, now)
        changes += list(allowance.changes_at)
    return Signals(
        offpeak=current.home_offpeak,
        ev_offpeak=current.ev_offpeak,
        confidence=current.confidence,
        dispatching=now_dispatch is not None,
        offpeak_end=end_source.end if end_source else None,
        next_offpeak_start=next_offpeak.start if next_offpeak else None,
        next_dispatch_start=next_dispatch.start if next_dispatch else None,
        next_dispatch_end=dispatch_end.end if dispatch_end else None,
        next_transition=min((c for c in changes if c > now), default=None),
        allowance=allowance,
    )


def transitions(
    rules: ProductRules,
    plan: Iterable[Dispatch],
    evidence: Sequence[Window],
    now: datetime,
    horizon: timedelta,
) -> list[Transition]:
    """Every change of ``offpeak``, ``ev_offpeak``, ``confidence`` or ``dispatching`` in
    ``(now, now + horizon]``."""
    now = to_utc(now)
    slots = list(plan)
    limit = now + horizon
    # The plan reads the same between two location changes: one timeline per stretch.
    points = [now, *(c for c in location_changes(slots, now) if c <= limit)]
    stretches = [timeline(rules, slots, evidence, p, now, limit + DAY) for p in points]
    dispatch = dispatch_windows(slots, now, limit + DAY)
    instants = sorted(
        {s.start for stretch in stretches for s in stretch[1:] if s.start <= limit}
        | {i for w in dispatch for i in (w.start, w.end) if now < i <= limit}
        | set(points[1:])
    )

    def value_at(instant: datetime) -> tuple[bool, bool, Confidence, bool]:
        stretch = stretches[bisect_right(points, instant) - 1]
        seg = next(s for s in stretch if s.start <= instant < s.end)
        return (seg.home_offpeak, seg.ev_offpeak, seg.confidence, _inside(dispatch, instant))

    result: list[Transition] = []
    previous = value_at(now)
    for instant in instants:
        value = value_at(instant)
        if value != previous:
            result.append(Transition(instant, *value))
            previous = value
    return result


__all__ = [
    "LOOKAHEAD",
    "Family",
    "ProductRules",
    "Segment",
    "Signals",
    "Transition",
    "evaluate",
    "home_windows",
    "timeline",
    "transitions",
    "victron_confidences",
]
