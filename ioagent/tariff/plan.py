"""Pure operations on a dispatch plan: normalise it, diff two plans, remember started slots.

A *plan* is a collection of :class:`~ioagent.kraken.types.Dispatch`. The API returns the same
plan with different offsets, microseconds and orderings from one poll to the next, so every
comparison starts with :func:`normalise`, which gives one canonical tuple per set of slots.

Nothing here reads the clock or does I/O; ``now`` is always a parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from ioagent.kraken.types import BOOST, SMART, SOURCE_TYPES, UNKNOWN, CompletedDispatch, Dispatch
from ioagent.timeutil import iso_z, to_utc

EventKind = Literal["slot_added", "slot_removed", "slot_changed"]

DEFAULT_KEEP = timedelta(hours=26)
"""How long :func:`drop_finished` remembers an ended slot by default.

The tariff's smart-charge cap counts every smart half-hour since the end of the last fixed
off-peak window (at most 25 wall-clock hours ago on a DST night), so ended slots must be kept
at least that long for the cap to be computed from the remembered plan.
"""


def _sort_key(slot: Dispatch) -> tuple[Any, ...]:
    return (
        slot.start,
        slot.device_id or "",
        slot.type,
        slot.end,
        slot.location or "",
        slot.source or "",
        -math.inf if slot.kwh is None else slot.kwh,
    )


def _merge_key(slot: Dispatch) -> tuple[str | None, str, str | None, str | None]:
    # Location and source are part of the key: merging an AWAY slot into an AT_HOME one would
    # change what the tariff makes of it.
    return (slot.device_id, slot.type, slot.location, slot.source)


def whole_second(value: datetime) -> datetime:
    """``value`` in UTC rounded to the nearest whole second, half a second rounding up.

    Rounding, not truncating: 19:29:59.9995 and 19:30:00.0001 are the same instant sent twice,
    and truncating would put them a second apart and report a changed slot. Half-up (not
    Python's half-to-even ``round``) so that every .5 goes the same way.
    """
    utc = to_utc(value)
    down = utc.replace(microsecond=0)
    if utc.microsecond < 500_000:
        return down
    try:
        return down + timedelta(seconds=1)
    except OverflowError:  # the last second datetime can hold: nowhere to round up to
        return down


def _clean(slot: Dispatch) -> Dispatch:
    return replace(slot, start=whole_second(slot.start), end=whole_second(slot.end))


def _sum_kwh(first: float | None, second: float | None) -> float | None:
    if first is None:
        return second
    if second is None:
        return first
    return first + second


def normalise(dispatches: Iterable[Dispatch]) -> tuple[Dispatch, ...]:
    """Return the canonical form of a plan.

    Times become UTC rounded to the nearest whole second (:func:`whole_second`); slots of zero
    or negative length are dropped; overlapping or adjacent slots with the same device, type,
    location and source are merged (kWh summed, ``None`` only if every part is ``None``); the
    result is sorted by (start, device_id, type) with the remaining fields as tie-breakers.
    """
    cleaned = sorted(
        (slot for slot in map(_clean, dispatches) if slot.end > slot.start), key=_sort_key
    )
    merged: list[Dispatch] = []
    open_by_key: dict[tuple[str | None, str, str | None, str | None], int] = {}
    for slot in cleaned:
        key = _merge_key(slot)
        index = open_by_key.get(key)
        if index is not None and slot.start <= merged[index].end:
            current = merged[index]
            merged[index] = replace(
                current, end=max(current.end, slot.end), kwh=_sum_kwh(current.kwh, slot.kwh)
            )
        else:
            open_by_key[key] = len(merged)
            merged.append(slot)
    return tuple(sorted(merged, key=_sort_key))


@dataclass(frozen=True)
class PlanEvent:
    """One difference between two plans.

    ``slot`` is the new slot for ``slot_added``/``slot_changed`` and the vanished slot for
    ``slot_removed``; ``previous`` is the old slot of a ``slot_changed`` and ``None`` otherwise.
    """

    kind: EventKind
    slot: Dispatch
    previous: Dispatch | None


_KIND_ORDER: dict[str, int] = {"slot_removed": 0, "slot_changed": 1, "slot_added": 2}


def _overlaps(first: Dispatch, second: Dispatch) -> bool:
    return first.start < second.end and second.start < first.end


def _match_key(slot: Dispatch) -> tuple[str | None, str]:
    return (slot.device_id, slot.type)


def diff(old: Iterable[Dispatch], new: Iterable[Dispatch]) -> list[PlanEvent]:
    """List the events that turn plan ``old`` into plan ``new`` (both normalised first).

    Slots are matched within the same (device_id, type):

    1. identical slots pair with each other and produce no event;
    2. the remaining old slots, in normalised order, each pair with the earliest remaining new
       slot that overlaps it in time; a pair that differs in any field is a ``slot_changed``;
    3. old slots left unpaired are ``slot_removed``; new slots left unpaired are ``slot_added``.

    So when one slot is split in two, the earlier part is the changed slot and the later part
    is added; when two slots merge into one, the earlier old slot is the changed one and the
    later one is removed. Events are ordered by slot start, then removed/changed/added.
    """
    old_slots = normalise(old)
    new_slots = normalise(new)
    events: list[PlanEvent] = []

    old_groups: dict[tuple[str | None, str], list[Dispatch]] = {}
    new_groups: dict[tuple[str | None, str], list[Dispatch]] = {}
    for slot in old_slots:
        old_groups.setdefault(_match_key(slot), []).append(slot)
    for slot in new_slots:
        new_groups.setdefault(_match_key(slot), []).append(slot)

    for key in sorted(old_groups.keys() | new_groups.keys(), key=lambda k: (k[0] or "", k[1])):
        olds = old_groups.get(key, [])
        news = new_groups.get(key, [])
        remaining_new = list(news)
        unmatched_old: list[Dispatch] = []
        for slot in olds:
            if slot in remaining_new:
                remaining_new.remove(slot)
            else:
                unmatched_old.append(slot)
        for slot in unmatched_old:
            partner = next((cand for cand in remaining_new if _overlaps(slot, cand)), None)
            if partner is None:
                events.append(PlanEvent("slot_removed", slot, None))
            else:
                remaining_new.remove(partner)
                events.append(PlanEvent("slot_changed", partner, slot))
        events.extend(PlanEvent("slot_added", slot, None) for slot in remaining_new)

    events.sort(key=lambda event: (_sort_key(event.slot), _KIND_ORDER[event.kind]))
    return events


def apply_events(plan: Iterable[Dispatch], events: Iterable[PlanEvent]) -> tuple[Dispatch, ...]:
    """Apply :func:`diff` events to a plan; ``apply_events(a, diff(a, b)) == normalise(b)``."""
    slots = list(normalise(plan))
    for event in events:
        if event.kind == "slot_removed":
            slots.remove(event.slot)
        elif event.kind == "slot_changed":
            assert event.previous is not None, "slot_changed always carries previous"
            slots.remove(event.previous)
            slots.append(event.slot)
        else:
            slots.append(event.slot)
    return normalise(slots)


def _kwh_json(kwh: float | None) -> float | None:
    # The API reports energy with either sign; what was added is always a positive amount.
    return None if kwh is None else round(abs(kwh), 3)


def slot_json(d: Dispatch) -> dict[str, Any]:
    """The published JSON form of one slot (UTC ``Z`` times, positive kWh)."""
    return {
        "start": iso_z(whole_second(d.start)),
        "end": iso_z(whole_second(d.end)),
        "kwh": _kwh_json(d.kwh),
        "type": d.type,
        "location": d.location,
        "device_id": d.device_id,
    }


def event_json(event: PlanEvent, at: datetime) -> dict[str, Any]:
    """The published JSON form of a plan event observed at ``at``."""
    return {
        "event": event.kind,
        "slot": slot_json(event.slot),
        "previous": None if event.previous is None else slot_json(event.previous),
        "at": iso_z(to_utc(at).replace(microsecond=0)),
    }


def _uncovered(
    start: datetime, end: datetime, covers: Iterable[Dispatch]
) -> list[tuple[datetime, datetime]]:
    """The parts of [start, end) not covered by any of ``covers``."""
    parts = [(start, end)]
    for cover in covers:
        next_parts: list[tuple[datetime, datetime]] = []
        for part_start, part_end in parts:
            if cover.end <= part_start or cover.start >= part_end:
                next_parts.append((part_start, part_end))
                continue
            if part_start < cover.start:
                next_parts.append((part_start, cover.start))
            if cover.end < part_end:
                next_parts.append((cover.end, part_end))
        parts = next_parts
    return parts


def carry_started(
    previous_effective: Sequence[Dispatch], fresh_planned: Sequence[Dispatch], now: datetime
) -> tuple[Dispatch, ...]:
    """The effective plan: the fresh plan plus the started slots that the API forgot.

    A slot that has started (``start <= now``) can vanish from ``flexPlannedDispatches`` while it
    runs or just after it ends; the car still charged and its half-hours are still billed
    off-peak. So a previously known started slot is kept:

    * whole (until its end, and after it until :func:`drop_finished` forgets it) when the fresh
      plan has no slot of the same device and type overlapping it;
    * only for its elapsed part (``start`` to ``min(end, now)``) not covered by the fresh plan
      when the fresh plan still has an overlapping slot: that fresh slot is authoritative for
      the future (a running slot may really be shortened), but the past happened. The carried
      fragment has ``kwh=None`` because its share of the energy is unknown.

    A slot that vanished before it started is a real withdrawal and is not kept. Only ``SMART``
    slots are carried: the reason to carry is the off-peak billing of their half-hours, which a
    boost never has, and a started boost that vanished was most likely cancelled.
    """
    now = to_utc(now)
    fresh = normalise(fresh_planned)
    carried: list[Dispatch] = list(fresh)
    for slot in normalise(previous_effective):
        if slot.start > now or slot.type != SMART:
            continue
        same_kind = [f for f in fresh if _match_key(f) == _match_key(slot)]
        overlapping = [f for f in same_kind if _overlaps(f, slot)]
        if not overlapping:
            carried.append(slot)
            continue
        elapsed_end = min(slot.end, now)
        for part_start, part_end in _uncovered(slot.start, elapsed_end, same_kind):
            carried.append(replace(slot, start=part_start, end=part_end, kwh=None))
    return normalise(carried)


def drop_finished(
    plan: Iterable[Dispatch], now: datetime, keep: timedelta = DEFAULT_KEEP
) -> tuple[Dispatch, ...]:
    """Forget slots that ended more than ``keep`` before ``now``."""
    if keep < timedelta(0):
        raise ValueError("keep must not be negative")
    horizon = to_utc(now) - keep
    return tuple(slot for slot in normalise(plan) if slot.end > horizon)


def located(
    plan: Iterable[Dispatch], completed: Iterable[CompletedDispatch]
) -> tuple[Dispatch, ...]:
    """``plan`` with each slot's location taken from the completed dispatches that overlap it.

    Planned dispatches carry no location, so a slot counts as at home until Octopus reports it
    completed (``meta.location``). A slot gets a location only when every overlapping completed
    record of its type that has one agrees; a slot that already has a location keeps it.
    """
    records = [c.as_dispatch() for c in completed]
    result: list[Dispatch] = []
    for slot in plan:
        if slot.location is None:
            found = {
                record.location
                for record in records
                if record.location is not None
                and record.type == slot.type
                and _overlaps(record, slot)
            }
            if len(found) == 1:
                slot = replace(slot, location=found.pop())
        result.append(slot)
    return tuple(result)


class PlannedSlot(Protocol):
    """What :func:`classify_completed` needs of a slot ioagent saw planned."""

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...

    @property
    def type(self) -> str: ...


def _shared_seconds(record: CompletedDispatch, slot: PlannedSlot) -> float:
    start, end = to_utc(record.start), to_utc(record.end)
    slot_start, slot_end = to_utc(slot.start), to_utc(slot.end)
    if start == end:
        # A zero-length record belongs to the slot it falls in; the tiny weight only ranks it.
        return 1e-6 if slot_start <= start < slot_end else 0.0
    return max(0.0, (min(end, slot_end) - max(start, slot_start)).total_seconds())


def classify_completed(
    completed: Iterable[CompletedDispatch], planned: Iterable[PlannedSlot]
) -> list[CompletedDispatch]:
    """Each completed record with ``kind`` set to what it was.

    Kraken fills ``meta.source`` for planned dispatches only, so a completed record (a boost
    too) almost always says nothing about what it was. A source it does send wins; otherwise
    the record is the type of the slots ioagent saw planned for that time (the type with the
    most time in common; a tie goes to BOOST, which never makes the house off-peak), and
    :data:`UNKNOWN` when ioagent saw nothing planned then (it was not running, say).
    ``planned`` should hold only slots that ran: not those withdrawn or replaced before they
    started.
    """
    slots = list(planned)
    result: list[CompletedDispatch] = []
    for record in completed:
        from_source = SOURCE_TYPES.get(record.source or "")
        if from_source is not None:
            result.append(replace(record, kind=from_source))
            continue
        shared: dict[str, float] = {}
        for slot in slots:
            seconds = _shared_seconds(record, slot)
            if seconds > 0:
                shared[slot.type] = shared.get(slot.type, 0.0) + seconds
        kind = (
            max(shared, key=lambda kind: (shared[kind], kind == BOOST, kind)) if shared else UNKNOWN
        )
        result.append(replace(record, kind=kind))
    return result


__all__ = [
    "DEFAULT_KEEP",
    "EventKind",
    "PlanEvent",
    "PlannedSlot",
    "apply_events",
    "carry_started",
    "classify_completed",
    "diff",
    "drop_finished",
    "event_json",
    "located",
    "normalise",
    "slot_json",
    "whole_second",
]
