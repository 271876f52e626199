"""P1 (boundary lateness) and the real-time check of P2/P3, from one run of the real daemon.

The daemon runs in-process (tests/harness.py) against the simulator and a private Mosquitto.
Before it starts, the simulator's EV gets many short SMART slots a few seconds apart (whole
seconds, not aligned to anything) and one "marker" slot 40 minutes ahead. With
``round_to_half_hour = false`` the house is off-peak exactly during each short slot, so every
slot edge flips ``offpeak`` and ``dispatching``. A plain MQTT subscriber timestamps each flip;
lateness is arrival time minus the boundary instant (both wall clock, same host).

While that runs, the marker slot's end is moved now and then. How long the daemon takes to
publish the moved slot, and how many ``flexPlannedDispatches`` calls the simulator counted, are
compared with what :mod:`bench.policy` predicts for the same start instant and settings. For
that the car reports SMART_CONTROL_IN_PROGRESS throughout and ``active_interval`` is 60 s (the
default is 300 s), so the daemon polls about once a minute and several changes are detected.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench import policy
from bench.env import LONDON, mosquitto, peak_now_tariff
from bench.stats import summary
from ioagent.config import PollingSettings
from ioagent.kraken.types import Dispatch
from ioagent.runtime.daemon import BOUNDARY_MAX_WAIT
from ioagent.simulator.server import run_simulator
from ioagent.simulator.state import DEFAULT_EV_ID, SimulatorState
from ioagent.timeutil import iso_z, parse_iso, utc_now
from tests.harness import Seen, running_daemon

PLANNED_FIELD = "flexPlannedDispatches"


@dataclass
class LiveConfig:
    slots: int = 80
    """Short slots; each gives two boundaries."""
    lead_seconds: float = 12.0
    slot_seconds: tuple[int, ...] = (1, 2, 3)
    gap_seconds: tuple[int, ...] = (1, 2, 3)
    duration_seconds: float = 330.0
    """How long the daemon runs (the policy check needs several active intervals)."""
    change_offsets: tuple[float, ...] = (20.0, 65.0, 110.0, 155.0, 200.0, 245.0, 290.0)
    """Seconds after the daemon is up at which the marker slot is moved."""
    polling: dict[str, Any] = field(default_factory=lambda: {"active_interval": CHECK_INTERVAL})
    """``[polling]`` for this run. ``active_interval`` is shortened from the default 300 s so
    that several polls, and so several detections, fall within a few minutes."""
    charging: bool = True
    """The car reports SMART_CONTROL_IN_PROGRESS for the whole run, so the daemon is active
    (and polls every ``active_interval``) whatever the slots say."""
    seed: int = 11


CHECK_INTERVAL = 60
"""The smallest ``active_interval`` the settings accept."""

QUICK = LiveConfig(
    slots=15,
    duration_seconds=125.0,
    change_offsets=(10.0, 40.0, 70.0, 100.0),
)


def make_slots(config: LiveConfig, first: datetime) -> list[tuple[datetime, datetime]]:
    rng = random.Random(config.seed)
    slots = []
    at = first.replace(microsecond=0)
    for _ in range(config.slots):
        end = at + timedelta(seconds=rng.choice(config.slot_seconds))
        slots.append((at, end))
        at = end + timedelta(seconds=rng.choice(config.gap_seconds))
    return slots


def flip_lateness(
    messages: list[Seen], topic: str, boundaries: list[tuple[datetime, str]]
) -> list[float]:
    """Seconds from each boundary to the first later message on ``topic`` with its value.

    Matched in order: the flip for boundary *k* is searched after the one for *k-1*, so a
    missing or early flip shows up as a large or negative figure rather than being hidden.
    """
    on_topic = [m for m in messages if m.topic == topic]
    lateness: list[float] = []
    cursor = 0
    for instant, value in boundaries:
        target = instant.timestamp()
        while cursor < len(on_topic) and (
            on_topic[cursor].payload != value or on_topic[cursor].at < target - 1.0
        ):
            cursor += 1
        if cursor == len(on_topic):
            break
        lateness.append(on_topic[cursor].at - target)
        cursor += 1
    return lateness


def _marker_seen(payload: str, start: str, end: datetime) -> bool:
    """The marker slot is published with this change (or a later one: each moves it further)."""
    try:
        slots = json.loads(payload)
    except ValueError:
        return False
    return any(s.get("start") == start and parse_iso(s["end"]) >= end for s in slots)


async def run_live(config: LiveConfig, workdir: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ioagent-bench-") as tmp:
        root = workdir or Path(tmp)
        with mosquitto(root) as broker:
            state = SimulatorState.with_default_account(clock=utc_now)
            async with run_simulator(state) as sim:
                return await _run(config, broker, sim, state, root)


async def _run(
    config: LiveConfig, broker: Any, sim: Any, state: SimulatorState, root: Path
) -> dict[str, Any]:
    device = state.device(DEFAULT_EV_ID)
    slots = make_slots(config, utc_now() + timedelta(seconds=config.lead_seconds))
    for start, end in slots:
        state.add_dispatch(device, start, end, "SMART", 0.1)
    marker_start = utc_now().replace(second=0, microsecond=0) + timedelta(minutes=40)
    marker_end = marker_start + timedelta(minutes=30)
    state.add_dispatch(device, marker_start, marker_end, "SMART", 3.5)
    if config.charging:
        state.set_device_state(device, policy.CHARGING)
    state.reset_calls()
    polling = {"backoff_initial": 1.0, "backoff_max": 10.0, **config.polling}

    changes: list[tuple[datetime, datetime]] = []
    (root / "data").mkdir(parents=True, exist_ok=True)
    # The bench runs on the wall clock, like its simulator (the tests' IOAGENT_TEST_START is not
    # for it).
    async with running_daemon(
        broker, sim, root / "data", clock=utc_now, tariff=peak_now_tariff(), polling=polling
    ) as d:
        up = utc_now()
        up_monotonic = time.monotonic()
        for index, offset in enumerate(config.change_offsets, start=1):
            await asyncio.sleep(max(0.0, up_monotonic + offset - time.monotonic()))
            new_end = marker_end + timedelta(minutes=index)
            state.shift_dispatch(device, marker_start, marker_start, new_end)
            changes.append((utc_now(), new_end))
        last_edge = slots[-1][1].timestamp() + 2.0
        until = max(
            up_monotonic + config.duration_seconds, time.monotonic() + last_edge - time.time()
        )
        await asyncio.sleep(max(0.0, until - time.monotonic()))
        finished = utc_now()
        messages = list(d.watcher.messages)
        topics = d.topics
        active_at_end = d.daemon.agent.is_active(finished)
    calls = state.calls()

    boundaries = sorted([(s, "true") for s, _ in slots] + [(e, "false") for _, e in slots])
    offpeak = flip_lateness(messages, topics.offpeak, boundaries)
    dispatching = flip_lateness(messages, topics.dispatching, boundaries)

    marker_iso = iso_z(marker_start)
    planned_messages = [m for m in messages if m.topic == topics.planned]
    detections: list[float | None] = []
    for changed_at, new_end in changes:
        seen = next(
            (
                m
                for m in planned_messages
                if m.at >= changed_at.timestamp() and _marker_seen(m.payload, marker_iso, new_end)
            ),
            None,
        )
        detections.append(None if seen is None else seen.at - changed_at.timestamp())

    log = calls["log"]
    poll_times = [parse_iso(e["at"]) for e in log if PLANNED_FIELD in e["operations"]]
    first_call = min((parse_iso(e["at"]) for e in log), default=up)
    settings = PollingSettings(**polling)
    scenario = policy.Scenario(
        "live window",
        first_call - timedelta(milliseconds=1),
        finished,
        plans=[
            (
                first_call - timedelta(hours=1),
                tuple(
                    Dispatch(s, e, "SMART", 0.1, device_id=policy.DEVICE_ID)
                    for s, e in [*slots, (marker_start, marker_end)]
                ),
            )
        ],
        # The device reports SMART_CONTROL_IN_PROGRESS while "plugged", as the simulator's car.
        plugged=[(first_call - timedelta(hours=1), finished)] if config.charging else [],
        charging_state_while_plugged=config.charging,
    )
    predicted = await policy.simulate(scenario, settings, poll_seconds=0.02, warmup=timedelta(0))
    predicted_detection = policy.detection_delays(predicted.polls, [c for c, _ in changes])
    real_offsets = [(p - first_call).total_seconds() for p in poll_times]
    predicted_offsets = [(p - first_call).total_seconds() for p in predicted.polls]
    paired = len(real_offsets) == len(predicted_offsets)
    return {
        "boundaries": len(boundaries),
        "slot_seconds": list(config.slot_seconds),
        "gap_seconds": list(config.gap_seconds),
        "offpeak_ms": summary(offpeak, 1000.0),
        "dispatching_ms": summary(dispatching, 1000.0),
        "all_flips_ms": summary(offpeak + dispatching, 1000.0),
        "lateness_ms": [round(x * 1000.0, 2) for x in offpeak + dispatching],
        "early_flips": sum(1 for x in offpeak + dispatching if x < 0),
        "missed_flips": 2 * len(boundaries) - len(offpeak) - len(dispatching),
        "run_seconds": round((finished - up).total_seconds(), 1),
        "polling": {k: v for k, v in config.polling.items()},
        "charging": config.charging,
        "daemon_active_at_end": active_at_end,
        "planned_queries_real": len(poll_times),
        "planned_queries_predicted": len(predicted.polls),
        "poll_offsets_real_s": [round(x, 1) + 0.0 for x in real_offsets],
        "poll_offsets_predicted_s": [round(x, 1) + 0.0 for x in predicted_offsets],
        "poll_offset_max_difference_s": round(
            max(
                (abs(a - b) for a, b in zip(real_offsets, predicted_offsets, strict=True)),
                default=0.0,
            ),
            2,
        )
        if paired
        else None,
        "requests_by_operation": calls["by_operation"],
        "changes": [
            {
                "at_s": round((c - first_call).total_seconds(), 1),
                "detected_after_s": None if real is None else round(real, 1),
                "predicted_s": None if pred is None else round(pred, 1),
            }
            for (c, _), real, pred in zip(changes, detections, predicted_detection, strict=True)
        ],
    }


# --- half-hour aligned boundaries, with a clock that jumps between them -----------------------

HALF_HOUR = timedelta(minutes=30)
ROUNDED_INSET = (timedelta(minutes=7), timedelta(minutes=23))
"""A ``rounded`` slot runs from 7 to 23 minutes into its half-hour."""
WINDOW_KINDS = ("aligned", "rounded", "fixed")


@dataclass
class AlignedConfig:
    """Windows one hour apart (30 minutes on, 30 off) on a simulated timeline a day ahead.

    ``aligned``: a SMART slot on :00/:30, so ``offpeak`` and ``dispatching`` both flip there.
    ``rounded``: a SMART slot from 7 to 23 minutes into the half-hour; with
    ``round_to_half_hour = true`` (the default) ``offpeak`` flips on :00/:30 and
    ``dispatching`` at the slot's own edges. ``fixed``: the tariff's fixed window
    (``offpeak_start``/``offpeak_end``), so only ``offpeak`` flips. At most one ``fixed``.
    """

    kinds: tuple[str, ...] = (
        "aligned",
        "rounded",
        "fixed",
        "aligned",
        "rounded",
        "aligned",
        "rounded",
        "aligned",
    )
    lead_seconds: float = 2.0
    """The clock is moved to this long before each boundary."""
    settle_seconds: float = 0.7
    """Wait this long after a boundary before the next jump."""


QUICK_ALIGNED = AlignedConfig(kinds=("aligned", "rounded", "fixed"))


def ceil_half_hour(instant: datetime) -> datetime:
    local = instant.astimezone(LONDON)
    floored = local.replace(minute=local.minute - local.minute % 30, second=0, microsecond=0)
    return (floored if floored == local else floored + HALF_HOUR).astimezone(instant.tzinfo)


def aligned_layout(
    config: AlignedConfig, first: datetime
) -> tuple[list[tuple[datetime, datetime]], tuple[datetime, datetime] | None, list[Expected]]:
    """(SMART slots, the fixed window, expected flips) for windows starting at ``first``."""
    if any(kind not in WINDOW_KINDS for kind in config.kinds):
        raise ValueError(f"window kinds are {WINDOW_KINDS}")
    if config.kinds.count("fixed") > 1:
        raise ValueError("at most one fixed window (it repeats daily)")
    slots: list[tuple[datetime, datetime]] = []
    fixed: tuple[datetime, datetime] | None = None
    expected: list[Expected] = []
    for index, kind in enumerate(config.kinds):
        start = first + index * 2 * HALF_HOUR
        end = start + HALF_HOUR
        expected += [Expected(start, "offpeak", "true"), Expected(end, "offpeak", "false")]
        if kind == "aligned":
            slots.append((start, end))
            expected += [
                Expected(start, "dispatching", "true"),
                Expected(end, "dispatching", "false"),
            ]
        elif kind == "rounded":
            slot = (start + ROUNDED_INSET[0], start + ROUNDED_INSET[1])
            slots.append(slot)
            expected += [
                Expected(slot[0], "dispatching", "true"),
                Expected(slot[1], "dispatching", "false"),
            ]
        else:
            fixed = (start, end)
    return slots, fixed, sorted(expected)


@dataclass(frozen=True, order=True)
class Expected:
    at: datetime
    topic: str
    value: str

    @property
    def on_half_hour(self) -> bool:
        local = self.at.astimezone(LONDON)
        return local.minute % 30 == 0 and local.second == 0 and local.microsecond == 0


class JumpingClock:
    """Wall clock plus an offset that the bench moves forward between boundaries."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.offset


async def run_aligned(config: AlignedConfig, workdir: Path | None = None) -> dict[str, Any]:
    """Flips at :00/:30 (and at rounded slots' own edges) with ``round_to_half_hour = true``.

    Half-hour boundaries are 30 minutes apart, so the daemon and the simulator share a clock
    (:class:`JumpingClock`, and ``SimulatorState.set_time_offset``) that the bench moves to
    ``lead_seconds`` before each boundary; between a jump and the boundary the clock runs at
    the wall clock's rate. No jump crosses a boundary. After each jump the bench sets the
    daemon's ``plan_changed`` event, as every poll does, so its boundary timer is re-armed
    from the new time at once (on its own the daemon re-checks at least every
    ``BOUNDARY_MAX_WAIT`` seconds). Lateness is the arrival time minus the boundary's real
    instant (the boundary minus the offset in force).
    """
    with tempfile.TemporaryDirectory(prefix="ioagent-bench-") as tmp:
        root = workdir or Path(tmp)
        with mosquitto(root) as broker:
            clock = JumpingClock()
            # JWTs that outlive the simulated timeline, so the jumps cause no token refresh.
            state = SimulatorState.with_default_account(
                clock=utc_now, jwt_lifetime=timedelta(days=1)
            )
            async with run_simulator(state) as sim:
                return await _run_aligned(config, broker, sim, state, clock, root)


async def _run_aligned(
    config: AlignedConfig,
    broker: Any,
    sim: Any,
    state: SimulatorState,
    clock: JumpingClock,
    root: Path,
) -> dict[str, Any]:
    first = ceil_half_hour(utc_now() + timedelta(days=1))
    slots, fixed, expected = aligned_layout(config, first)

    def move_to(instant: datetime) -> None:
        clock.offset = instant - utc_now()
        state.set_time_offset(clock.offset.total_seconds())

    move_to(first - timedelta(minutes=10))
    device = state.device(DEFAULT_EV_ID)
    for start, end in slots:
        state.add_dispatch(device, start, end, "SMART", 1.0)
    tariff: dict[str, Any] = {"round_to_half_hour": True}
    if fixed is not None:
        tariff |= {
            "offpeak_start": fixed[0].astimezone(LONDON).strftime("%H:%M"),
            "offpeak_end": fixed[1].astimezone(LONDON).strftime("%H:%M"),
        }
    else:  # keep the fixed window well away from the timeline
        away = first - timedelta(hours=6)
        tariff |= {
            "offpeak_start": away.astimezone(LONDON).strftime("%H:%M"),
            "offpeak_end": (away + HALF_HOUR).astimezone(LONDON).strftime("%H:%M"),
        }
    (root / "data").mkdir(parents=True, exist_ok=True)
    real: dict[Expected, datetime] = {}
    async with running_daemon(broker, sim, root / "data", clock=clock, tariff=tariff) as d:
        started = time.monotonic()
        for instant in sorted({e.at for e in expected}):
            move_to(instant - timedelta(seconds=config.lead_seconds))
            d.daemon.plan_changed.set()
            boundary_real = instant - clock.offset
            for e in expected:
                if e.at == instant:
                    real[e] = boundary_real
            await asyncio.sleep(
                max(0.0, (boundary_real - utc_now()).total_seconds() + config.settle_seconds)
            )
        elapsed = time.monotonic() - started
        messages = list(d.watcher.messages)
        topics = d.topics

    lateness: dict[str, list[tuple[Expected, float]]] = {}
    for topic_name in ("offpeak", "dispatching"):
        wanted = [e for e in expected if e.topic == topic_name]
        found = flip_lateness(
            messages, getattr(topics, topic_name), [(real[e], e.value) for e in wanted]
        )
        lateness[topic_name] = list(zip(wanted, found, strict=False))
    flips = [(e, x) for pairs in lateness.values() for e, x in pairs]
    on_half_hour = [x for e, x in flips if e.on_half_hour]
    inside = [x for e, x in flips if not e.on_half_hour]
    return {
        "kinds": list(config.kinds),
        "first_boundary": iso_z(first),
        "boundaries": len({e.at for e in expected}),
        "half_hour_boundaries": len({e.at for e in expected if e.on_half_hour}),
        "expected_flips": len(expected),
        "lead_seconds": config.lead_seconds,
        "run_seconds": round(elapsed, 1),
        "boundary_max_wait_s": BOUNDARY_MAX_WAIT,
        "half_hour_ms": summary(on_half_hour, 1000.0),
        "half_hour_offpeak_ms": summary(
            [x for e, x in lateness["offpeak"] if e.on_half_hour], 1000.0
        ),
        "half_hour_dispatching_ms": summary(
            [x for e, x in lateness["dispatching"] if e.on_half_hour], 1000.0
        ),
        "inside_half_hour_ms": summary(inside, 1000.0),
        "lateness_ms": [round(x * 1000.0, 2) for _, x in flips],
        "early_flips": sum(1 for _, x in flips if x < 0),
        "missed_flips": len(expected) - len(flips),
    }
