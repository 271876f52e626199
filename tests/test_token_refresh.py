"""The daemon's ``token-refresh`` task on a fake clock: retries back off and avoid :00/:30.

``asyncio.sleep`` is replaced for the test by one that moves the fake clock, so an hour-long
outage of the token endpoint takes no real time.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ioagent.budget import avoid_boundary, is_quiet_second
from ioagent.config import Settings
from ioagent.kraken.errors import TransientError
from ioagent.kraken.tokens import BACKGROUND_RETRY
from ioagent.runtime.daemon import Daemon
from tests.faults.test_api_storm import FakeClock

START = datetime(2026, 1, 14, 9, 3, 41, tzinfo=UTC)
OUTAGE = timedelta(hours=2)


class _Enough(Exception):
    """Ends the task's endless loop once the test has seen enough."""


class OutageClient:
    """The token endpoint fails until ``recovers_at``; a refresh then moves the due time."""

    def __init__(self, clock: FakeClock, due: datetime, recovers_at: datetime) -> None:
        self.clock = clock
        self.due = due
        self.recovers_at = recovers_at
        self.attempts: list[datetime] = []

    def token_refresh_due_at(self) -> datetime | None:
        return self.due

    async def refresh_token_if_due(self) -> bool:
        now = self.clock()
        if now < self.due:
            return False
        self.attempts.append(now)
        if now < self.recovers_at:
            raise TransientError("Kraken API timed out (ObtainKrakenToken)", code="timeout")
        self.due = now + timedelta(minutes=55)
        return True


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeClock, list[float]]:
    clock = FakeClock(START)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)
        if clock() > START + 2 * OUTAGE:
            raise _Enough

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return clock, slept


def daemon(clock: FakeClock, tmp_path: Path) -> Daemon:
    settings = Settings.model_validate(
        {
            "octopus": {
                "api_key": "sk_live_FAKEtokenRefresh00001",
                "account_number": "A-TEST0001",
            },
            "storage": {"path": str(tmp_path / "ioagent.db")},
        }
    )
    instance = Daemon(settings, clock=clock)
    instance.rng = random.Random(7)
    return instance


async def run_refresh_task(instance: Daemon, client: OutageClient) -> None:
    with pytest.raises(_Enough):
        await instance._token_refresh(client)


async def test_a_failing_token_refresh_backs_off_with_jitter(
    fake_time: tuple[FakeClock, list[float]], tmp_path: Path
) -> None:
    clock, _ = fake_time
    instance = daemon(clock, tmp_path)
    due = START + timedelta(minutes=5)
    client = OutageClient(clock, due, recovers_at=due + OUTAGE)
    await run_refresh_task(instance, client)

    failed = [at for at in client.attempts if at < client.recovers_at]
    assert failed[0] == due
    # Before: about once a second for the whole outage; now a handful of attempts in two hours.
    assert 5 <= len(failed) <= 10
    maximum = instance.settings.polling.backoff_max
    bases = [
        min(maximum, BACKGROUND_RETRY.total_seconds() * 2 ** (number - 1))
        for number in range(1, len(failed))
    ]
    gaps = [(after - before).total_seconds() for before, after in itertools.pairwise(failed)]
    for base, gap in zip(bases, gaps, strict=True):
        # Jitter shortens a delay by up to a quarter; the quiet seconds lengthen it by up to 25 s.
        assert 0.75 * base <= gap <= base + 25, (base, gap)
    assert any(gap < base for base, gap in zip(bases, gaps, strict=True)), "jittered"


async def test_no_token_refresh_starts_in_the_quiet_seconds_of_the_half_hour(
    fake_time: tuple[FakeClock, list[float]], tmp_path: Path
) -> None:
    clock, _ = fake_time
    instance = daemon(clock, tmp_path)
    due = datetime(2026, 1, 14, 9, 29, 58, tzinfo=UTC)
    client = OutageClient(clock, due, recovers_at=due + OUTAGE)
    await run_refresh_task(instance, client)

    assert client.attempts[0] == datetime(2026, 1, 14, 9, 30, 20, tzinfo=UTC)
    assert len(client.attempts) > 3
    assert not [at for at in client.attempts if is_quiet_second(at)]


async def test_after_a_recovery_the_refresh_runs_when_due_again(
    fake_time: tuple[FakeClock, list[float]], tmp_path: Path
) -> None:
    clock, _ = fake_time
    instance = daemon(clock, tmp_path)
    due = START + timedelta(minutes=5)
    client = OutageClient(clock, due, recovers_at=due + timedelta(minutes=5))
    await run_refresh_task(instance, client)

    recovered = next(at for at in client.attempts if at >= client.recovers_at)
    later = [at for at in client.attempts if at > recovered]
    assert later, "the next refresh runs"
    # Each refresh after the recovery runs when due, 55 min after the last: no back-off is left.
    for before, after in itertools.pairwise([recovered, *later]):
        assert after == avoid_boundary(before + timedelta(minutes=55))


class ShortLivedTokenClient(OutageClient):
    """Every token is due again as soon as it is issued (a JWT no longer than the margin)."""

    async def refresh_token_if_due(self) -> bool:
        self.attempts.append(self.clock())
        if len(self.attempts) > 1000:
            raise _Enough  # a refresh loop: end it, the assertions say what went wrong
        self.due = self.clock()
        return True


async def test_a_token_that_is_due_at_once_is_not_refreshed_in_a_loop(
    fake_time: tuple[FakeClock, list[float]], tmp_path: Path
) -> None:
    clock, _ = fake_time
    instance = daemon(clock, tmp_path)
    client = ShortLivedTokenClient(clock, START, recovers_at=START)
    await run_refresh_task(instance, client)
    gaps = [later - earlier for earlier, later in itertools.pairwise(client.attempts)]
    assert gaps and min(gaps) >= BACKGROUND_RETRY
    assert len(client.attempts) <= (2 * OUTAGE) / BACKGROUND_RETRY + 1
