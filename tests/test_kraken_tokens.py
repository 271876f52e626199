"""TokenSource against the simulator with a shared fake clock: login, refresh, re-login, locking,
and no secret in any log line or repr."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from pydantic import SecretStr
from structlog.testing import capture_logs

from ioagent.kraken.client import KrakenClient
from ioagent.kraken.errors import AuthFailed, KrakenError
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_API_KEY, DEFAULT_EV_ID, SimulatorState

JWT_LIFETIME = timedelta(minutes=10)
REFRESH_LIFETIME = timedelta(hours=1)


class FakeClock:
    """One clock for the simulator and the client, moved by the test instead of by sleeping."""

    def __init__(self) -> None:
        # Start in the past: the simulator verifies `iat` against the real clock, so a JWT
        # issued "in the future" of the wall clock would be refused.
        self.now = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class World:
    clock: FakeClock
    sim: RunningSimulator
    client: KrakenClient

    async def control(self, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                "GET" if body is None else "POST", f"{self.sim.control_url}/{path}", json=body
            ) as response,
        ):
            assert response.status == 200, await response.text()
            return await response.json()

    async def logins(self) -> int:
        counted = await self.control("calls")
        return int(counted["by_operation"].get("obtainKrakenToken", 0))

    async def grant_type(self) -> str:
        """How the simulator issued the client's current JWT (API key or refresh token)."""
        token = self.client.tokens.current
        assert token is not None
        claims = jwt.decode(token.jwt, options={"verify_signature": False})
        return str(claims["gty"])


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    state = SimulatorState.with_default_account(
        clock=clock, jwt_lifetime=JWT_LIFETIME, refresh_lifetime=REFRESH_LIFETIME
    )
    async with (
        run_simulator(state) as sim,
        KrakenClient(sim.graphql_url, SecretStr(DEFAULT_API_KEY), clock=clock) as client,
    ):
        yield World(clock, sim, client)


async def _wait_for_logins(world: World, expected: int) -> None:
    """Wait for the background refresh to reach the simulator (up to a 5 s safety net)."""
    for _ in range(500):
        if await world.logins() >= expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {expected} obtainKrakenToken calls")


async def test_login_reads_expiry_from_the_jwt(world: World) -> None:
    assert world.client.token_refresh_due_at() is None
    await world.client.login()
    assert world.client.tokens.expires_at == world.clock.now + JWT_LIFETIME
    assert world.client.token_refresh_due_at() == world.clock.now + JWT_LIFETIME - timedelta(
        minutes=5
    )
    assert await world.grant_type() == "EMAIL-AND-PASSWORD"
    await world.client.devices(DEFAULT_ACCOUNT)
    assert await world.logins() == 1


async def test_refresh_if_due_uses_the_refresh_token(world: World) -> None:
    await world.client.login()
    world.clock.advance(timedelta(minutes=4))
    assert await world.client.refresh_token_if_due() is False
    assert await world.logins() == 1
    world.clock.advance(timedelta(minutes=2))
    assert await world.client.refresh_token_if_due() is True
    assert await world.logins() == 2
    assert await world.grant_type() == "REFRESH-TOKEN"
    assert world.client.tokens.expires_at == world.clock.now + JWT_LIFETIME
    await world.client.devices(DEFAULT_ACCOUNT)
    assert await world.logins() == 2


async def test_due_token_is_used_at_once_and_refreshed_in_the_background(world: World) -> None:
    await world.client.login()
    first = world.client.tokens.current
    assert first is not None
    world.clock.advance(timedelta(minutes=6))
    # Still valid: the caller gets it without waiting for the refresh it triggers.
    assert await world.client.tokens.token() == first.jwt
    await _wait_for_logins(world, 2)
    # Waits on the lock the background refresh holds, then finds nothing left to do.
    assert await world.client.tokens.refresh_if_due() is False
    assert await world.client.tokens.token() != first.jwt
    assert await world.grant_type() == "REFRESH-TOKEN"


async def test_expired_refresh_token_falls_back_to_api_key(world: World) -> None:
    await world.client.login()
    await world.control("tokens/expire", {"refresh": True})
    # The JWT is refused (KT-CT-1124), the refresh token too (KT-CT-1135): log in again.
    devices = await world.client.devices(DEFAULT_ACCOUNT)
    assert [d.id for d in devices] == [DEFAULT_EV_ID]
    assert await world.logins() == 3
    assert await world.grant_type() == "EMAIL-AND-PASSWORD"


async def test_refresh_token_past_its_absolute_expiry_is_not_tried(world: World) -> None:
    await world.client.login()
    world.clock.advance(timedelta(minutes=6))
    assert await world.client.refresh_token_if_due()  # refreshing does not extend its life
    world.clock.advance(REFRESH_LIFETIME)
    await world.client.devices(DEFAULT_ACCOUNT)
    assert await world.logins() == 3  # login, refresh, login: no doomed refresh attempt
    assert await world.grant_type() == "EMAIL-AND-PASSWORD"


async def test_ten_concurrent_callers_share_one_login(world: World) -> None:
    results = await asyncio.gather(*(world.client.devices(DEFAULT_ACCOUNT) for _ in range(10)))
    assert all(r[0].id == DEFAULT_EV_ID for r in results)
    assert await world.logins() == 1


async def test_ten_concurrent_callers_with_an_expired_token_cause_one_refresh(
    world: World,
) -> None:
    await world.client.login()
    world.clock.advance(JWT_LIFETIME + timedelta(minutes=1))
    await asyncio.gather(*(world.client.devices(DEFAULT_ACCOUNT) for _ in range(10)))
    assert await world.logins() == 2
    assert await world.grant_type() == "REFRESH-TOKEN"


async def test_ten_concurrent_callers_with_a_due_token_cause_one_background_refresh(
    world: World,
) -> None:
    await world.client.login()
    world.clock.advance(timedelta(minutes=6))
    await asyncio.gather(*(world.client.tokens.token() for _ in range(10)))
    await _wait_for_logins(world, 2)
    await world.client.tokens.refresh_if_due()  # not due any more: must not log in again
    assert await world.logins() == 2


async def test_bad_key_after_expiry_is_auth_failed(world: World) -> None:
    await world.client.login()
    world.sim.state.accounts[DEFAULT_ACCOUNT].api_key = "sk_test_rotated_key_0000"
    await world.control("tokens/expire", {"refresh": True})
    with pytest.raises(AuthFailed) as caught:
        await world.client.devices(DEFAULT_ACCOUNT)
    assert caught.value.code == "KT-CT-1139"


async def test_no_secret_in_logs_reprs_or_errors(world: World) -> None:
    seen_tokens: list[str] = []
    errors: list[KrakenError] = []
    with capture_logs() as logs:
        await world.client.login()
        token = world.client.tokens.current
        assert token is not None and token.refresh_token is not None
        seen_tokens += [token.jwt, token.refresh_token]
        world.clock.advance(timedelta(minutes=6))
        await world.client.refresh_token_if_due()
        token = world.client.tokens.current
        assert token is not None and token.refresh_token is not None
        seen_tokens += [token.jwt, token.refresh_token]
        await world.control("faults", {"kind": "auth_error", "count": 1})
        result = await world.client.poll(DEFAULT_ACCOUNT, [DEFAULT_EV_ID])
        token = world.client.tokens.current
        assert token is not None and token.refresh_token is not None
        seen_tokens += [token.jwt, token.refresh_token]
        await world.control("faults", {"kind": "partial", "count": 1})
        partial = await world.client.poll(DEFAULT_ACCOUNT, [DEFAULT_EV_ID])
        errors += partial.errors.values()
        async with KrakenClient(
            world.sim.graphql_url, SecretStr("sk_test_not_the_key_0000")
        ) as wrong:
            try:
                await wrong.devices(DEFAULT_ACCOUNT)
            except AuthFailed as exc:
                errors.append(exc)
    assert len(set(seen_tokens)) == 6
    assert len(errors) == 2
    secrets = [DEFAULT_API_KEY, "sk_test_not_the_key_0000", *seen_tokens]
    rendered = [
        repr(logs),
        repr(world.client),
        str(world.client.tokens),
        repr(world.client.tokens),
        repr(world.client.transport),
        repr(world.client.tokens.current),
        repr(result),
        repr(partial),
        *(str(e) for e in errors),
        *(repr(e) for e in errors),
    ]
    assert any(entry["event"] == "kraken_reauthenticating" for entry in logs)
    for text in rendered:
        for secret in secrets:
            assert secret not in text
