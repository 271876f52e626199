"""Octopus's bucket labels → (side, band), for every vocabulary seen; unknown labels → None.

Vocabularies (docs/ledger.md, octopus-tariffs-2026 "Settled billing"):

* legacy Intelligent Octopus Go: ``OFF_PEAK``, ``STANDARD_RATE`` (one label per half-hour);
* a flat tariff: ``CONSUMPTION`` (no band at all);
* four-rate until 28 Sep 2026: ``CONSUMPTION_CHARGE_ECO7_DAY_<r>`` (home standard),
  ``…_ECO7_NIGHT_<r>`` (home low), ``…_EV_DEVICE_OFF_PEAK_<r>`` (car low),
  ``…_EV_DEVICE_PEAK_<r>`` (car standard), ``<r>`` a GSP region letter;
* four-rate since 28 Sep 2026: ``HOME LOW RATE``, ``HOME STANDARD RATE``, ``EV LOW RATE``,
  ``EV STANDARD RATE``, also served for past half-hours.

Matching is on whole, normalised words (case, ``_`` and spaces folded), never a loose
substring: "EV" is tested before the home words because ``EV STANDARD RATE`` also says
STANDARD, and OFF PEAK before PEAK because ``OFF_PEAK`` also says PEAK. Anything not matched
exactly is unknown — the failure this avoids is a new vocabulary silently read as home peak.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

Side = Literal["home", "car"]
BucketBand = Literal["low", "standard", "flat"]

HOME: Final = "home"
CAR: Final = "car"
LOW: Final = "low"
STANDARD: Final = "standard"
FLAT: Final = "flat"
"""A flat (single-rate) tariff's bucket: energy and money, but no band to compare."""

REGION_LETTERS: Final = "ABCDEFGHJKLMNP"
"""GSP group letters (A-P without I and O)."""


@dataclass(frozen=True, slots=True)
class BucketKind:
    side: Side
    band: BucketBand
    vocabulary: str
    """Which label set matched: ``legacy``, ``flat``, ``four-rate-v1`` or ``four-rate-v2``."""

    @property
    def name(self) -> str:
        """``home low``, ``car standard``, ``home flat``…"""
        return f"{self.side} {self.band}"


def _words(label: str) -> tuple[str, ...]:
    return tuple(w for w in re.split(r"[\s_]+", label.strip().upper()) if w)


_V1_PREFIX: Final = ("CONSUMPTION", "CHARGE")
_V1_BODIES: Final[dict[tuple[str, ...], tuple[Side, BucketBand]]] = {
    # EV first: the order documents the rule even though whole-word matching needs none.
    ("EV", "DEVICE", "OFF", "PEAK"): (CAR, LOW),
    ("EV", "DEVICE", "PEAK"): (CAR, STANDARD),
    ("ECO7", "NIGHT"): (HOME, LOW),
    ("ECO7", "DAY"): (HOME, STANDARD),
}
_V2: Final[dict[tuple[str, ...], tuple[Side, BucketBand]]] = {
    ("EV", "LOW", "RATE"): (CAR, LOW),
    ("EV", "STANDARD", "RATE"): (CAR, STANDARD),
    ("HOME", "LOW", "RATE"): (HOME, LOW),
    ("HOME", "STANDARD", "RATE"): (HOME, STANDARD),
}
_LEGACY: Final[dict[tuple[str, ...], tuple[Side, BucketBand]]] = {
    ("OFF", "PEAK"): (HOME, LOW),
    ("STANDARD", "RATE"): (HOME, STANDARD),
}


def classify_label(label: str) -> BucketKind | None:
    """The bucket a consumption-cost label names, or None when ioagent does not know it."""
    words = _words(label)
    if not words:
        return None
    if words[:2] == _V1_PREFIX:
        body = words[2:]
        # The region suffix is one GSP letter; a label without one has not been seen.
        if len(body) >= 2 and len(body[-1]) == 1 and body[-1] in REGION_LETTERS:
            found = _V1_BODIES.get(body[:-1])
            if found is not None:
                return BucketKind(found[0], found[1], "four-rate-v1")
        return None
    if words in _V2:
        side, band = _V2[words]
        return BucketKind(side, band, "four-rate-v2")
    if words in _LEGACY:
        side, band = _LEGACY[words]
        return BucketKind(side, band, "legacy")
    if words == ("CONSUMPTION",):
        return BucketKind(HOME, FLAT, "flat")
    return None
