"""The Victron connector against a fake GX (tests/gx_peer.py) on a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiomqtt import TLSParameters
from pydantic import SecretStr
from structlog.testing import capture_logs

from ioagent.config import VictronSettings
from ioagent.victron.connector import (
    VictronConnector,
    dbus_mqtt_keepalive,
    describe_scheduled_charge,
    parse_fields,
    parse_value,
    reconnect_delay,
)
from tests.broker import Broker
from tests.canary import secret
from tests.faults.conftest import make_certificates, run_as_root_option
from tests.gx_peer import (
    DBUS_MQTT,
    FACTORY_SLOT,
    FLASHMQ,
    PORTAL_ID,
    SCHEDULE,
    USER_SLOTS,
    GxPeer,
    slot_path,
)

SUPPRESS = {"keepalive-options": ["suppress-republish"]}
DBUS_MQTT_KEEPALIVE = [
    f"{SCHEDULE}/3",
    f"{SCHEDULE}/3/#",
    f"{SCHEDULE}/4",
    f"{SCHEDULE}/4/#",
    "system/0/Control/ScheduledChargeStatus",
    "settings/0/Settings/CGwacs/BatteryLife/State",
]
"""What ioagent asks dbus-mqtt to keep alive: its own slots and the status, nothing else."""


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@dataclass
class FakeClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Harness:
    connector: VictronConnector
    clock: FakeClock
    statuses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> dict[str, Any]:
        return self.statuses[-1] if self.statuses else {}

    async def synced(self, after: int | None = None) -> None:
        """Wait until a sync round that began after now has finished."""
        target = (self.connector.completed_syncs if after is None else after) + 1
        await eventually(lambda: self.connector.completed_syncs >= target)


async def eventually(predicate: Callable[[], bool], within: float = 8.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


def make_settings(target: Broker, **overrides: Any) -> VictronSettings:
    return VictronSettings(
        enabled=True, host=target.host, port=target.port, slots=[3, 4], **overrides
    )


@pytest.fixture
async def harness_factory(
    broker: Broker,
) -> AsyncIterator[Callable[..., Harness]]:
    tasks: list[asyncio.Task[None]] = []

    def start(
        now: datetime,
        *,
        target: Broker | None = None,
        tuning: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> Harness:
        statuses: list[dict[str, Any]] = []

        async def publish(status: dict[str, Any]) -> None:
            # Round-trip through JSON: the daemon publishes it as JSON.
            statuses.append(json.loads(json.dumps(status)))

        clock = FakeClock(now)
        connector = VictronConnector(
            make_settings(target or broker, **overrides),
            publish_status=publish,
            clock=clock,
            **{
                "keepalive_interval": 0.2,
                # Five missed heartbeats of the peer: long enough not to trip on a busy machine.
                "silence_timeout": 1.0,
                "reevaluate_interval": 0.3,
                "read_timeout": 2.0,
                "confirm_timeout": 0.5,
                "reconnect_initial": 0.1,
                "reconnect_max": 0.3,
                # dbus-flashmq beats at once on a keepalive; dbus-mqtt announces itself.
                "detect_timeout": 0.5,
                **(tuning or {}),
            },
        )
        tasks.append(asyncio.create_task(connector.run()))
        return Harness(connector, clock, statuses)

    yield start
    for task in tasks:
        task.cancel()
    async with asyncio.timeout(10):  # safety net: a connector must always stop when cancelled
        await asyncio.gather(*tasks, return_exceptions=True)


def user_slots_untouched(peer: GxPeer) -> bool:
    return all(peer.slot(n) == USER_SLOTS[n] for n in USER_SLOTS) and not any(
        peer.writes_to(n) for n in USER_SLOTS
    )


SPRING = pytest.param(
    utc(2025, 3, 29, 20),
    [
        (utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1, 30)),
        (utc(2025, 3, 30, 1, 0), utc(2025, 3, 30, 2, 30)),
        (utc(2025, 3, 30, 10), utc(2025, 3, 30, 11)),
    ],
    {"Day": 0, "Start": 1800, "Duration": 3 * 3600},
    {"Day": 0, "Start": 11 * 3600, "Duration": 3600},
    id="spring-gmt-to-bst",
)
AUTUMN = pytest.param(
    utc(2025, 10, 25, 20),
    [
        (utc(2025, 10, 25, 23, 30), utc(2025, 10, 26, 2)),
        (utc(2025, 10, 26, 2), utc(2025, 10, 26, 4, 30)),
        (utc(2025, 10, 26, 10), utc(2025, 10, 26, 11)),
    ],
    {"Day": 0, "Start": 1800, "Duration": 4 * 3600},
    {"Day": 0, "Start": 10 * 3600, "Duration": 3600},
    id="autumn-bst-to-gmt",
)


@pytest.mark.parametrize(("now", "windows", "first", "second"), [SPRING, AUTUMN])
async def test_writes_merged_windows_in_gx_local_time(
    gx: GxPeer,
    harness_factory: Callable[..., Harness],
    now: datetime,
    windows: list[tuple[datetime, datetime]],
    first: dict[str, int],
    second: dict[str, int],
) -> None:
    harness = harness_factory(now)
    await harness.connector.update_windows(windows, now)
    common = {"Soc": 100, "AllowDischarge": 0}
    await eventually(
        lambda: gx.slot(3) == {**first, **common} and gx.slot(4) == {**second, **common}
    )
    await eventually(lambda: harness.status["last_confirmed_write"] is not None)

    status = harness.status
    assert status["connected"] is True
    assert status["portal_id"] == PORTAL_ID
    assert status["broker"] == gx.mode
    assert status["error"] is None
    assert status["dry_run"] is False
    assert status["scheduled_charge_status"] == "OK: scheduled charging can run"
    assert status["slots"]["3"]["start"] == "00:30"
    assert status["slots"]["3"]["duration_min"] == first["Duration"] // 60
    assert status["slots"]["3"]["enabled"] is True
    assert status["slots"]["3"]["window_start"] == windows[0][0].isoformat().replace("+00:00", "Z")
    assert status["slots"]["3"]["window_end"] == windows[1][1].isoformat().replace("+00:00", "Z")
    assert gx.retained_writes == []
    assert user_slots_untouched(gx)
    # Never an empty keepalive (a full republish): the cheap form first, then the broker's own.
    await eventually(lambda: len(gx.keepalives) >= 3)
    assert json.loads(gx.keepalives[0]) == SUPPRESS
    renewal = SUPPRESS if gx.mode == FLASHMQ else DBUS_MQTT_KEEPALIVE
    assert all(json.loads(k) == renewal for k in gx.keepalives[1:])


async def test_unchanged_plan_makes_no_writes(
    gx: GxPeer, harness_factory: Callable[..., Harness]
) -> None:
    now = utc(2025, 1, 15, 12)
    windows = [(utc(2025, 1, 15, 23, 30), utc(2025, 1, 16, 5, 30))]
    harness = harness_factory(now)
    await harness.connector.update_windows(windows, now)
    await eventually(lambda: gx.slot(3)["Day"] == 3)
    await harness.synced()
    written = list(gx.writes)
    # Only the three fields that differed from the factory slot, and a disabled slot 4 untouched.
    assert sorted(path for path, _ in written) == sorted(
        slot_path(3, name) for name in ("Day", "Start", "Duration")
    )

    await harness.connector.update_windows(list(windows), now + timedelta(minutes=5))
    await harness.synced()
    harness.clock.now = now + timedelta(hours=1)
    await harness.synced()
    assert gx.writes == written
    assert harness.status["pending_writes"] == []


async def test_slot_disabled_once_its_window_ends(
    gx: GxPeer, harness_factory: Callable[..., Harness]
) -> None:
    now = utc(2025, 1, 15, 23)
    windows = [(utc(2025, 1, 15, 23, 30), utc(2025, 1, 16, 1))]
    harness = harness_factory(now)
    await harness.connector.update_windows(windows, now)
    await eventually(lambda: gx.slot(3)["Day"] == 3)

    # No new plan arrives: the periodic re-evaluation alone must notice the end.
    harness.clock.now = utc(2025, 1, 16, 1, 0)
    await eventually(lambda: gx.slot(3)["Day"] == -3)
    await eventually(lambda: harness.status["slots"]["3"]["enabled"] is False)
    assert gx.slot(3)["Start"] == 84600  # only Day is written to disable
    assert user_slots_untouched(gx)


async def test_reconnects_and_resyncs_after_gx_and_broker_go_offline(
    broker: Broker, gx: GxPeer, harness_factory: Callable[..., Harness]
) -> None:
    now = utc(2025, 1, 15, 12)
    harness = harness_factory(now)
    await harness.connector.update_windows(
        [(utc(2025, 1, 15, 23, 30), utc(2025, 1, 16, 5, 30))], now
    )
    await eventually(lambda: gx.slot(3)["Day"] == 3)

    await gx.stop()
    broker.restart()
    await eventually(lambda: harness.status["connected"] is False)
    assert harness.status["error"] is not None
    # While offline: the plan changes, and someone edits slot 4 on the GX itself.
    await harness.connector.update_windows(
        [
            (utc(2025, 1, 15, 23, 30), utc(2025, 1, 16, 5, 30)),
            (utc(2025, 1, 16, 11), utc(2025, 1, 16, 12)),
        ],
        now,
    )
    gx.values[slot_path(4, "Soc")] = 55

    await gx.start()
    await eventually(lambda: harness.status["connected"] is True)
    await eventually(
        lambda: (
            gx.slot(4)
            == {"Day": 4, "Start": 11 * 3600, "Duration": 3600, "Soc": 100, "AllowDischarge": 0}
        )
    )
    await eventually(lambda: harness.status["error"] is None)
    assert gx.slot(3)["Day"] == 3
    assert gx.retained_writes == []
    assert user_slots_untouched(gx)


SILENT = {
    FLASHMQ: (
        f"connected to the GX broker, but the GX (portal {PORTAL_ID}) has sent nothing, not "
        "even a heartbeat, for 1 s: asking it again"
    ),
    DBUS_MQTT: (
        f"connected to the GX broker, but the GX (portal {PORTAL_ID}, dbus-mqtt) has answered "
        "no read for 1 s: asking it again"
    ),
}
OVERNIGHT = (utc(2025, 1, 15, 23, 30), utc(2025, 1, 16, 5, 30))
NEXT_MORNING = (utc(2025, 1, 16, 11), utc(2025, 1, 16, 12))
SLOT_4_NEXT_MORNING = {"Day": 4, "Start": 11 * 3600, "Duration": 3600, "Soc": 100}


async def test_a_silent_gx_is_reported_revived_and_resynced(
    gx: GxPeer, harness_factory: Callable[..., Harness]
) -> None:
    now = utc(2025, 1, 15, 12)
    harness = harness_factory(now)
    await harness.connector.update_windows([OVERNIGHT], now)
    await eventually(lambda: gx.slot(3)["Day"] == 3)
    assert harness.status["gx_silent"] is False

    gx.stall()
    keepalives = len(gx.keepalives)
    await eventually(lambda: harness.status["gx_silent"] is True)
    assert harness.status["connected"] is True, "the broker still answers"
    assert harness.status["error"] == SILENT[gx.mode]
    # The plan changes while the GX is silent: nothing is written blind.
    writes = len(gx.writes)
    await harness.connector.update_windows([OVERNIGHT, NEXT_MORNING], now)
    await eventually(lambda: len(gx.keepalives) > keepalives)
    assert b"" not in gx.keepalives, "reviving asks for no full republish"
    assert gx.writes[writes:] == []

    gx.resume(restarted=True)
    await eventually(lambda: gx.slot(4) == {**SLOT_4_NEXT_MORNING, "AllowDischarge": 0})
    await eventually(lambda: harness.status["gx_silent"] is False)
    await eventually(lambda: harness.status["error"] is None)
    assert gx.slot(3)["Day"] == 3
    assert user_slots_untouched(gx)


async def test_a_gx_silent_for_long_is_reconnected(
    gx: GxPeer, harness_factory: Callable[..., Harness]
) -> None:
    now = utc(2025, 1, 15, 12)
    harness = harness_factory(now, tuning={"silent_rounds_before_reconnect": 2})
    await harness.connector.update_windows([OVERNIGHT], now)
    await eventually(lambda: gx.slot(3)["Day"] == 3)

    with capture_logs() as logs:
        gx.stall()

        def events(name: str) -> list[dict[str, Any]]:
            return [e for e in logs if e["event"] == name]

        await eventually(lambda: bool(events("victron.connected")))
    assert [e["error"] for e in events("victron.disconnected")] == [
        f"the GX (portal {PORTAL_ID}) sent nothing for 2 s despite fresh keepalives: reconnecting"
    ]
    await eventually(lambda: harness.status["connected"] is True)
    assert harness.status["gx_silent"] is True, "still silent on the new connection"

    await harness.connector.update_windows([OVERNIGHT, NEXT_MORNING], now)
    gx.resume(restarted=True)
    await eventually(lambda: gx.slot(4) == {**SLOT_4_NEXT_MORNING, "AllowDischarge": 0})
    await eventually(lambda: harness.status["gx_silent"] is False)
    # A dbus-flashmq that was stalled through the detection was taken for dbus-mqtt (no
    # heartbeat); its heartbeat, once back, puts that right.
    await eventually(lambda: harness.status["broker"] == gx.mode)


async def test_a_replaced_gx_is_found_by_its_new_portal_id(
    broker: Broker, gx: GxPeer, harness_factory: Callable[..., Harness]
) -> None:
    now = utc(2025, 1, 15, 12)
    harness = harness_factory(now)
    await harness.connector.update_windows([OVERNIGHT], now)
    await eventually(lambda: gx.slot(3)["Day"] == 3)

    # A new GX in its place: its own broker (nothing retained) and another portal id.
    await gx.stop()
    broker.restart()
    replacement = GxPeer(
        broker.host, broker.port, portal_id="c0619ab2ffff", mode=gx.mode, heartbeat_interval=0.2
    )
    await replacement.start()
    try:
        await eventually(lambda: replacement.slot(3)["Day"] == 3)
        await eventually(lambda: harness.status["portal_id"] == "c0619ab2ffff")
        await eventually(lambda: harness.status["error"] is None)
        assert replacement.retained_writes == []
    finally:
        await replacement.stop()


async def test_dry_run_logs_but_never_writes(
    gx: GxPeer, harness_factory: Callable[..., Harness]
) -> None:
    now = utc(2025, 1, 15, 12)
    with capture_logs() as logs:
        harness = harness_factory(now, dry_run=True)
        await harness.connector.update_windows(
            [(utc(2025, 1, 15, 23, 30), utc(2025, 1, 16, 5, 30))], now
        )
        await harness.synced()
        await harness.synced()
    assert gx.writes == []
    assert gx.slot(3) == FACTORY_SLOT
    status = harness.status
    assert status["dry_run"] is True
    assert {"slot": 3, "field": "Day", "value": 3} in status["pending_writes"]
    assert status["last_confirmed_write"] is None
    logged = [e for e in logs if e["event"] == "victron.dry_run_write"]
    # Logged once, not on every re-evaluation.
    assert sorted(e["topic"] for e in logged) == sorted(
        f"W/{PORTAL_ID}/{slot_path(3, name)}" for name in ("Day", "Start", "Duration")
    )


async def test_unconfirmed_write_is_retried_then_reported(
    gx: GxPeer, harness_factory: Callable[..., Harness]
) -> None:
    gx.reject_writes.add(slot_path(3, "Start"))
    now = utc(2025, 1, 15, 12)
    harness = harness_factory(now, portal_id=PORTAL_ID)
    await harness.connector.update_windows(
        [(utc(2025, 1, 15, 23, 30), utc(2025, 1, 16, 5, 30))], now
    )
    await eventually(
        lambda: (harness.status.get("error") or "").startswith("the GX did not confirm")
    )
    assert harness.status["error"] == (
        "the GX did not confirm Schedule/Charge/3/Start = 84600 after 3 attempts: it reads back "
        "0, so it refused the value (the GX refuses values it does not accept, such as "
        "out-of-range ones, without a word)"
    )
    assert harness.status["gx_silent"] is False
    assert gx.writes_to(3)[:3] == [(slot_path(3, "Start"), 84600)] * 3
    # The slot is never enabled with a start the GX refused.
    assert gx.slot(3)["Day"] == -7


GX_PEER_USER = "gx"
GX_PEER_PASSWORD = secret("gx-peer-pass-5c1d")
CONNECTOR_USER = "ioagent"
CONNECTOR_PASSWORD = secret("gx-secret-pass-829")
LOGIN_REFUSED = (
    "GX connection lost or refused: MQTT broker refused the login: not authorised "
    "(check the user name and password)"
)


@dataclass
class LockedBroker:
    """A Mosquitto that admits only the fake GX and ioagent, each with its own password."""

    broker: Broker
    ca_file: Path | None

    def peer(self, mode: str) -> GxPeer:
        options: dict[str, Any] = {"username": GX_PEER_USER, "password": GX_PEER_PASSWORD}
        if self.ca_file is not None:
            options["tls_params"] = TLSParameters(ca_certs=str(self.ca_file))
        return GxPeer(
            self.broker.host,
            self.broker.port,
            mode=mode,
            heartbeat_interval=0.2,
            client_options=options,
        )

    def login(self, password: str) -> dict[str, Any]:
        """Connector settings that log in as ioagent with ``password``."""
        overrides: dict[str, Any] = {"username": CONNECTOR_USER, "password": SecretStr(password)}
        if self.ca_file is not None:
            overrides["tls"] = {"enabled": True, "ca_file": self.ca_file}
        return overrides


@pytest.fixture
def locked_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LockedBroker]:
    """Password-only by default; ``indirect`` parameter "tls" serves TLS only as well."""
    workdir = tmp_path / "locked"
    workdir.mkdir()
    listener: list[str] = []
    ca_file = None
    if getattr(request, "param", "password") == "tls":
        ca_file, cert, key = make_certificates(workdir / "certs")
        listener = [f"cafile {ca_file}", f"certfile {cert}", f"keyfile {key}"]
    passwords = workdir / "passwords"
    for user, password in ((GX_PEER_USER, GX_PEER_PASSWORD), (CONNECTOR_USER, CONNECTOR_PASSWORD)):
        create = [] if passwords.exists() else ["-c"]
        subprocess.run(
            ["mosquitto_passwd", "-b", *create, str(passwords), user, password],
            check=True,
            capture_output=True,
        )
    passwords.chmod(0o600)
    broker = Broker(
        workdir=workdir / "mosquitto",
        listener_options=listener,
        extra_config=[
            "allow_anonymous false",
            f"password_file {passwords}",
            *run_as_root_option(),
        ],
    )
    broker.start()
    try:
        yield LockedBroker(broker, ca_file)
    finally:
        broker.stop()


@pytest.mark.parametrize("locked_broker", ["password", "tls"], indirect=True)
async def test_logs_in_to_a_locked_gx_broker_and_never_shows_the_password(
    locked_broker: LockedBroker, harness_factory: Callable[..., Harness], gx_mode: str
) -> None:
    gx = locked_broker.peer(gx_mode)
    await gx.start()
    now = utc(2025, 1, 15, 12)
    try:
        with capture_logs() as logs:
            harness = harness_factory(
                now, target=locked_broker.broker, **locked_broker.login(CONNECTOR_PASSWORD)
            )
            await harness.connector.update_windows(
                [(utc(2025, 1, 15, 23, 30), utc(2025, 1, 16, 5, 30))], now
            )
            await eventually(lambda: gx.slot(3)["Day"] == 3)
    finally:
        await gx.stop()
    assert f"u'{CONNECTOR_USER}'" in locked_broker.broker.log(), "logged in as ioagent"
    assert logs, "the connector logs its progress"
    assert CONNECTOR_PASSWORD not in repr(logs)
    assert CONNECTOR_PASSWORD not in json.dumps(harness.statuses)
    assert CONNECTOR_PASSWORD not in repr(VictronSettings(password=SecretStr(CONNECTOR_PASSWORD)))


async def test_a_refused_gx_login_is_reported_and_retried_with_backoff(
    locked_broker: LockedBroker, harness_factory: Callable[..., Harness]
) -> None:
    wrong = "gx-WRONG-pass-7e2a"
    now = utc(2025, 1, 15, 12)
    with capture_logs() as logs:
        harness = harness_factory(now, target=locked_broker.broker, **locked_broker.login(wrong))

        def refusals() -> list[dict[str, Any]]:
            return [e for e in logs if e["event"] == "victron.disconnected"]

        await eventually(lambda: len(refusals()) >= 4)
        await eventually(lambda: harness.status.get("error") == LOGIN_REFUSED)
    assert harness.status["connected"] is False
    seen = refusals()
    assert all(e["error"] == LOGIN_REFUSED for e in seen)
    # Backoff that keeps growing towards its cap rather than a tight retry loop.
    assert [e["attempt"] for e in seen[:4]] == [1, 2, 3, 4]
    assert all(0.05 <= e["retry_in"] <= 0.3 for e in seen), [e["retry_in"] for e in seen]
    assert wrong not in repr(logs) and wrong not in json.dumps(harness.statuses)


@pytest.mark.parametrize(
    ("code", "battery_life_state", "words"),
    [
        (0, 10, "OK: scheduled charging can run"),
        (1, None, "ESS is not installed: scheduled charging cannot run"),
        (2, 10, "The GX knows no battery state of charge: scheduled charging cannot run"),
        (3, 9, "ESS mode is Keep batteries charged: scheduled charging cannot run"),
        (None, 9, "ESS mode is Keep batteries charged: scheduled charging cannot run"),
        (4, 10, "Scheduled charging is blocked, for example by Dynamic ESS: turn Dynamic ESS off"),
        (None, None, "unknown: the GX has not reported its scheduled-charge status"),
        (17, 10, "unknown scheduled-charge status 17"),
    ],
)
def test_scheduled_charge_status_words(
    code: int | None, battery_life_state: int | None, words: str
) -> None:
    assert describe_scheduled_charge(code, battery_life_state) == words


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        (b'{"value": 936}', 936),
        (b'{"value": 99.6}', 100),
        (b'{"value": "c0619ab2e3f4"}', "c0619ab2e3f4"),
        (b'{"value": null}', None),
        (b"", None),
        (b"not json", None),
        (b'{"other": 1}', None),
    ],
)
def test_parse_value(payload: bytes, value: int | str | None) -> None:
    assert parse_value(payload) == value


@pytest.mark.parametrize("attempt", [0, 1, 5, 40])
def test_reconnect_delay_is_capped_and_jittered(attempt: int) -> None:
    ceiling = min(60.0, 1.0 * 2**attempt)
    delays = {reconnect_delay(attempt, 1.0, 60.0) for _ in range(50)}
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(delays) > 1


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        (
            b'{"value": {"Day": 3, "Start": 84600, "Duration": 21600, "Soc": 100, '
            b'"AllowDischarge": 0}}',
            {"Day": 3, "Start": 84600, "Duration": 21600, "Soc": 100, "AllowDischarge": 0},
        ),
        (b'{"value": {"/Day": -7, "/Soc": 99.6}}', {"Day": -7, "Soc": 100}),
        (b'{"value": {"Day": null, "Soc": "x"}}', {"Day": None, "Soc": None}),
        (b'{"value": 3}', None),
        (b"", None),
        (b"not json", None),
    ],
)
def test_parse_fields_reads_dbus_mqtt_subtree_answers(
    payload: bytes, fields: dict[str, int | None] | None
) -> None:
    assert parse_fields(payload) == fields


def test_dbus_mqtt_keepalive_names_only_what_ioagent_needs() -> None:
    assert json.loads(dbus_mqtt_keepalive([3, 4])) == DBUS_MQTT_KEEPALIVE


# --- the real stack's differences --------------------------------------------------------


async def test_first_contact_costs_the_gx_only_what_ioagent_needs(
    gx: GxPeer, harness_factory: Callable[..., Harness]
) -> None:
    """The peer holds a bare GX's ~700 topics; a full republish would send them all."""
    now = utc(2025, 1, 15, 12)
    harness = harness_factory(now)
    await harness.connector.update_windows([OVERNIGHT], now)
    await eventually(lambda: gx.slot(3)["Day"] == 3)
    await eventually(lambda: harness.status["pending_writes"] == [])
    await harness.synced()
    sent = [t for t in gx.published_topics() if not t.endswith("/heartbeat")]
    assert f"N/{PORTAL_ID}/full_publish_completed" not in sent
    assert b"" not in gx.keepalives
    if gx.mode == FLASHMQ:
        assert json.loads(gx.keepalives[0]) == SUPPRESS
    # Two slots of five fields, the two status values, the three writes' echoes and read-backs,
    # the liveness reads: a few dozen at most, where a full republish is 700.
    assert 12 <= len(sent) <= 40, sent
    touched = {t.split("/", 2)[2] for t in sent}
    assert all(
        path.startswith((f"{SCHEDULE}/3", f"{SCHEDULE}/4"))
        or path
        in (
            "system/0/Control/ScheduledChargeStatus",
            "settings/0/Settings/CGwacs/BatteryLife/State",
        )
        for path in touched
    ), touched


async def test_a_hung_settings_service_is_named_in_the_status(
    gx: GxPeer, harness_factory: Callable[..., Harness]
) -> None:
    now = utc(2025, 1, 15, 12)
    harness = harness_factory(now)
    await harness.connector.update_windows([OVERNIGHT], now)
    await eventually(lambda: gx.slot(3)["Day"] == 3)
    await eventually(lambda: harness.status["error"] is None)

    # localsettings hangs; dbus-flashmq's heartbeat (or dbus-mqtt's other answers) goes on.
    gx.settings_hung = True
    await harness.connector.update_windows([OVERNIGHT, NEXT_MORNING], now)
    alive = "its heartbeat goes on" if gx.mode == FLASHMQ else "it answers other reads"
    await eventually(lambda: (harness.status.get("error") or "").startswith("the GX did not"))
    assert harness.status["error"] == (
        "the GX did not confirm Schedule/Charge/4/Start = 39600 after 3 attempts: it did not "
        f"answer the read-back at all, although it is alive ({alive}): its settings service "
        "(localsettings) may be hung; restarting the GX clears that"
    )
    assert harness.status["gx_silent"] is False
    assert gx.slot(4)["Day"] == -7, "never enabled half-written"

    gx.settings_hung = False
    await eventually(lambda: gx.slot(4) == {**SLOT_4_NEXT_MORNING, "AllowDischarge": 0})
    await eventually(lambda: harness.status["error"] is None)


@pytest.mark.parametrize("broker_setting", ["dbus-flashmq", "dbus-mqtt"])
async def test_a_broker_setting_skips_the_detection(
    broker: Broker, harness_factory: Callable[..., Harness], broker_setting: str
) -> None:
    peer = GxPeer(broker.host, broker.port, mode=broker_setting, heartbeat_interval=0.2)
    await peer.start()
    try:
        now = utc(2025, 1, 15, 12)
        harness = harness_factory(now, broker=broker_setting)
        await harness.connector.update_windows([OVERNIGHT], now)
        await eventually(lambda: peer.slot(3)["Day"] == 3)
        assert harness.status["broker"] == broker_setting
        expected = SUPPRESS if broker_setting == FLASHMQ else DBUS_MQTT_KEEPALIVE
        assert json.loads(peer.keepalives[0]) == expected, "no detection keepalive first"
    finally:
        await peer.stop()


async def test_a_dbus_mqtt_that_does_not_announce_itself_is_known_by_its_missing_heartbeat(
    broker: Broker, harness_factory: Callable[..., Harness]
) -> None:
    peer = GxPeer(broker.host, broker.port, mode=DBUS_MQTT, announces_keepalive=False)
    await peer.start()
    try:
        now = utc(2025, 1, 15, 12)
        with capture_logs() as logs:
            harness = harness_factory(now)
            await harness.connector.update_windows([OVERNIGHT], now)
            await eventually(lambda: peer.slot(3)["Day"] == 3)
        detected = [e for e in logs if e["event"] == "victron.broker_detected"]
        assert [(e["broker"], e["reason"]) for e in detected] == [
            (DBUS_MQTT, "no heartbeat within 0.5 s of a keepalive")
        ]
        await eventually(lambda: harness.status["error"] is None)
        assert harness.status["broker"] == DBUS_MQTT
    finally:
        await peer.stop()


async def test_the_real_heartbeat_cadence_raises_no_false_alarm(
    broker: Broker, harness_factory: Callable[..., Harness]
) -> None:
    """dbus-flashmq beats every 3 s; the watchdog waits two keepalive intervals (here 4 s)."""
    peer = GxPeer(broker.host, broker.port, mode=FLASHMQ)
    assert peer.heartbeat_interval == 3.0
    await peer.start()
    try:
        now = utc(2025, 1, 15, 12)
        harness = harness_factory(
            now, tuning={"keepalive_interval": 4.0, "silence_timeout": None, "detect_timeout": 10}
        )
        await harness.connector.update_windows([OVERNIGHT], now)
        await eventually(lambda: peer.slot(3)["Day"] == 3)
        await asyncio.sleep(12)  # three silence timeouts' worth of nothing but heartbeats
        assert not any(status["gx_silent"] for status in harness.statuses)
        assert harness.status["broker"] == FLASHMQ
        assert harness.status["error"] is None
    finally:
        await peer.stop()


def plan_window(step: int) -> tuple[datetime, datetime]:
    """A different evening window for each step of a changing plan."""
    start = utc(2025, 1, 15, 18) + timedelta(minutes=30 * step)
    return start, start + timedelta(minutes=30)


async def keep_dbus_mqtt_in_sync(
    broker: Broker,
    harness_factory: Callable[..., Harness],
    *,
    gx_keepalive_timeout: float,
    tuning: dict[str, Any],
    plan_changes: int,
    change_every: float,
) -> None:
    """Change the plan again and again for a while: dbus-mqtt must never lapse, every plan must
    reach the GX, and the watchdog must never see a silent GX."""
    peer = GxPeer(broker.host, broker.port, mode=DBUS_MQTT, keepalive_timeout=gx_keepalive_timeout)
    await peer.start()
    try:
        now = utc(2025, 1, 15, 12)
        harness = harness_factory(now, tuning=tuning)
        for step in range(plan_changes):
            window = plan_window(step)
            await harness.connector.update_windows([window], now)
            start = window[0].hour * 3600 + window[0].minute * 60
            await eventually(
                lambda start=start: (
                    peer.slot(3)
                    == {
                        **SLOT_4_NEXT_MORNING,
                        "Day": 3,
                        "Start": start,
                        "Duration": 1800,
                        "AllowDischarge": 0,
                    }
                ),
                within=max(8.0, change_every),
            )
            await asyncio.sleep(change_every)
        assert peer.cleared == [], "dbus-mqtt's keepalive never lapsed"
        assert not any(status["gx_silent"] for status in harness.statuses)
        assert harness.status["error"] is None
        assert harness.status["broker"] == DBUS_MQTT
        assert b"" not in peer.keepalives
        assert all(json.loads(k) == DBUS_MQTT_KEEPALIVE for k in peer.keepalives[1:])
        assert user_slots_untouched(peer)
    finally:
        await peer.stop()


async def test_keeps_a_dbus_mqtt_gx_in_sync_while_the_plan_changes(
    broker: Broker, harness_factory: Callable[..., Harness]
) -> None:
    """The soak test below with its timings divided by 30: a 2 s dbus-mqtt keepalive timeout
    (60 s on the GX), outlived several times over."""
    await keep_dbus_mqtt_in_sync(
        broker,
        harness_factory,
        gx_keepalive_timeout=2.0,
        tuning={"keepalive_interval": 1.0, "silence_timeout": None, "reevaluate_interval": 2.0},
        plan_changes=6,
        change_every=2.0,
    )


@pytest.mark.soak
@pytest.mark.timeout(900)  # ten minutes of real timings; the default 150 s deadline cut it off
async def test_soak_keeps_a_dbus_mqtt_gx_in_sync_for_ten_minutes(
    broker: Broker, harness_factory: Callable[..., Harness]
) -> None:
    """Ten minutes at the real timings: dbus-mqtt forgets topics after 60 s, ioagent renews
    every 30 s and re-evaluates every 60 s; the plan changes every minute."""
    await keep_dbus_mqtt_in_sync(
        broker,
        harness_factory,
        gx_keepalive_timeout=60.0,
        tuning={
            "keepalive_interval": 30.0,
            "silence_timeout": None,
            "reevaluate_interval": 60.0,
            "read_timeout": 10.0,
            "confirm_timeout": 5.0,
            "detect_timeout": 10.0,
        },
        plan_changes=10,
        change_every=60.0,
    )
