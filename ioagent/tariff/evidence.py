"""Which slots count, and which are confirmed: shared by every product family.

*Counting* is about type and location (R7 in docs/tariff.md): only ``SMART`` slots count, and
a completed one counts whatever its location says; only a slot still running (or to come)
reported ``AWAY`` does not.

*Confirmed* is about whether the car really charged (R6): a slot is confirmed when some piece
of charging evidence overlaps it. The caller builds the evidence from the device history: a
completed-dispatch record (any location), or an instant at which the device reported
``SMART_CONTROL_IN_PROGRESS`` (a window of one second at that instant).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Literal, get_args

from ioagent.kraken.types import AWAY, SMART, CompletedDispatch, Dispatch
from ioagent.tariff.windows import Window
from ioagent.timeutil import to_utc

Confidence = Literal["guaranteed", "charging", "planned", "none"]
"""How sure ioagent is that the home's rate is low now: the night window (``guaranteed``),
a smart slot in which the car is confirmed charging (``charging``), a smart slot expected but
not confirmed (``planned``), or peak (``none``)."""
CONFIDENCES: tuple[Confidence, ...] = get_args(Confidence)

OBSERVATION = timedelta(seconds=1)
"""The length of the evidence window made by one observation of the device charging."""


def counts(slot: Dispatch, now: datetime) -> bool:
    """A ``SMART`` slot, unless it is still running (or to come) and reported ``AWAY``."""
    if slot.type != SMART:
        return False
    return slot.location != AWAY or to_utc(slot.end) <= to_utc(now)


def location_changes(plan: Iterable[Dispatch], now: datetime) -> list[datetime]:
    """Instants after ``now`` at which :func:`counts` reads the plan differently: the ends of
    smart slots reported ``AWAY`` (from then on they are completed and count again)."""
    now = to_utc(now)
    return sorted(
        {
            to_utc(slot.end)
            for slot in plan
            if slot.type == SMART and slot.location == AWAY and to_utc(slot.end) > now
        }
    )


def confirmed(slot: Dispatch, evidence: Sequence[Window]) -> bool:
    window = Window(to_utc(slot.start), to_utc(slot.end))
    return any(window.overlaps(piece) for piece in evidence)


def evidence_from(
    completed: Iterable[CompletedDispatch], charging_seen: Iterable[datetime]
) -> list[Window]:
    """Charging evidence: completed smart records, and instants the device reported charging."""
    pieces = [
        Window(to_utc(record.start), to_utc(record.end))
        for record in completed
        if record.type == SMART and record.end > record.start
    ]
    pieces += [Window(to_utc(at), to_utc(at) + OBSERVATION) for at in charging_seen]
    return sorted(pieces, key=lambda w: (w.start, w.end))


__all__ = [
    "CONFIDENCES",
    "OBSERVATION",
    "Confidence",
    "confirmed",
    "counts",
    "evidence_from",
    "location_changes",
]
