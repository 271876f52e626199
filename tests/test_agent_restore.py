"""What the ``api`` topic says right after a start, before any call to Octopus."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

from ioagent.agent import AccountAgent
from ioagent.async_store import AsyncStore
from ioagent.config import TariffSettings
from ioagent.kraken.client import KrakenClient
from ioagent.topics import Topics

NOW = datetime(2026, 11, 23, 18, 0, 7, tzinfo=UTC)
ACCOUNT = "A-1234ABCD"
TOPICS = Topics("ioagent", ACCOUNT)


@dataclass
class RecordingPublisher:
    retained: dict[str, str] = field(default_factory=dict)

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        if retain:
            self.retained[topic] = payload


async def restored_api(store: AsyncStore) -> str | None:
    publisher = RecordingPublisher()
    # Never called: restore() works from the store alone, before any API call.
    client = KrakenClient("http://127.0.0.1:9/", SecretStr("sk_test_unused"), clock=lambda: NOW)
    agent = AccountAgent(
        account=ACCOUNT,
        client=client,
        publisher=publisher,
        store=store,
        topics=TOPICS,
        tariff=TariffSettings(),
        clock=lambda: NOW,
    )
    await agent.restore()
    await client.close()
    return publisher.retained.get(TOPICS.api)


async def test_a_new_install_does_not_claim_the_api_is_ok_before_its_first_poll(
    tmp_path: Path,
) -> None:
    store = await AsyncStore.open(tmp_path / "ioagent.db")
    try:
        assert await restored_api(store) is None
    finally:
        await store.close()


async def test_a_restart_shows_the_last_known_api_state_and_the_datas_age(tmp_path: Path) -> None:
    last_success = NOW - timedelta(hours=2)
    failed_at = NOW - timedelta(minutes=30)
    store = await AsyncStore.open(tmp_path / "ioagent.db")
    try:
        previous = {
            "state": "auth_failed",
            "last_success": last_success.isoformat().replace("+00:00", "Z"),
            "last_error": "Kraken API refused the API key (KT-CT-1139)",
            "last_error_at": failed_at.isoformat().replace("+00:00", "Z"),
            "stale_seconds": 5400,
            "storage": "ok",
        }
        await store.save_retained(TOPICS.api, json.dumps(previous), failed_at)
        await store.set_meta(f"last_success:{ACCOUNT}", previous["last_success"])
        payload = await restored_api(store)
    finally:
        await store.close()
    assert payload is not None
    health = json.loads(payload)
    assert health["state"] == "auth_failed", "a restart must not turn a known failure into ok"
    assert health["last_error"] == previous["last_error"]
    assert health["last_error_at"] == previous["last_error_at"]
    assert health["stale_seconds"] == 2 * 3600
