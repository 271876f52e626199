"""Time helpers shared by every module: UTC in, ISO-8601 with ``Z`` out.

Pure code takes ``now`` or a :data:`Clock` as a parameter instead of reading the wall clock,
so tests can drive it without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""Returns the current instant as an aware UTC datetime."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_utc(value: datetime) -> datetime:
    """Convert an aware datetime to UTC; a naive one is rejected because its zone is unknown."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} has no time zone")
    return value.astimezone(UTC)


def iso_z(value: datetime) -> str:
    """Format an aware datetime as UTC ISO-8601 with a ``Z`` suffix (microseconds kept if any)."""
    return to_utc(value).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """Parse an ISO-8601 string with an offset (``Z`` allowed) into an aware UTC datetime."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return to_utc(parsed)
