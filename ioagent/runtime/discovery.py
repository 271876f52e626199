"""Finding the account when ``[octopus] account_number`` is not set, visibly.

Until the account is known there are no ``{base}/{acct}/…`` topics, so a wrong API key would
show nowhere but in one log line. While discovery fails, ioagent therefore connects to the
broker and says what is wrong on two retained topics of their own (docs/mqtt.md):

* ``{base}/setup/status`` — ``online`` while it retries, ``offline`` (also the last will) after;
* ``{base}/setup/api`` — the same JSON shape as ``{base}/{acct}/api``, with a ``hint`` that
  names the config key to fix.

Both are cleared once the account is known (the daemon's main connection clears them).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import datetime, timedelta

from ioagent.aio import cancel_and_wait, wait_event
from ioagent.config import Settings
from ioagent.kraken.client import KrakenClient
from ioagent.kraken.errors import AuthFailed, KrakenError
from ioagent.logs import get_logger, redact
from ioagent.mqtt.bridge import IncomingMessage, MqttBridge
from ioagent.mqtt.topics import setup_api_topic, setup_status_topic
from ioagent.runtime.agent import api_state_for
from ioagent.store.async_store import AsyncStore
from ioagent.timeutil import Clock, iso_z

log = get_logger(__name__)

RETRY_MAX = 600.0
SETUP_BRIDGE_STOP_BOUND = 3.0


class DiscoveryStopped(Exception):
    """A stop was requested before the account was found."""


def discovery_hint(error: KrakenError) -> str:
    """What to change, naming the config key (users fix a file, not an exception)."""
    if isinstance(error, AuthFailed):
        return (
            "Octopus refused the API key: check [octopus] api_key (or IOAGENT_OCTOPUS__API_KEY). "
            "Copy it again from the Octopus website, Personal details > API access; it starts "
            "sk_live_"
        )
    return (
        "set [octopus] account_number (A- and 8 characters, on your bill) to skip discovery, "
        "and check [octopus] api_key"
    )


def retry_delay(error: KrakenError, failures: int) -> float:
    """Capped doubling; a refused key is not going to work sooner, so wait the longest."""
    if isinstance(error, AuthFailed):
        return RETRY_MAX
    return min(RETRY_MAX, 10.0 * 2.0 ** min(failures, 6))


def setup_api_json(error: KrakenError, now: datetime, retry_at: datetime) -> str:
    return json.dumps(
        {
            "state": api_state_for(error),
            "last_success": None,
            "last_error": redact(str(error)),
            "last_error_at": iso_z(now),
            "hint": discovery_hint(error),
            "retry_at": iso_z(retry_at),
        },
        sort_keys=True,
    )


async def _ignore(_: IncomingMessage) -> None:
    return None


async def discover_account(
    settings: Settings,
    client: KrakenClient,
    store: AsyncStore,
    stop_requested: asyncio.Event,
    clock: Clock,
) -> str:
    """The account to run; raises :class:`DiscoveryStopped` on a stop request."""
    configured = settings.octopus.account_number
    if configured:
        return configured
    base = settings.mqtt.base_topic
    # Connected before the first attempt: a key that Octopus refuses, or an API that does not
    # answer, must show on the broker, not only in the log.
    bridge = MqttBridge(
        settings.mqtt,
        # Its own id: a second instance in the same state must not kick this one off.
        client_id=f"{settings.mqtt.client_id or 'ioagent'}-setup-{secrets.token_hex(3)}",
        status_topic=setup_status_topic(base),
        subscriptions=[],
        on_message=_ignore,
        clock=clock,
    )
    bridge_task = asyncio.create_task(bridge.run(), name="mqtt-setup")
    failures = 0
    try:
        while True:
            try:
                account = await client.discover_account(None)
                await store.set_meta("account", account)
                return account
            except KrakenError as exc:
                cached = await store.get_meta("account")
                if cached:
                    log.warning(
                        "account_discovery_failed_using_cached", account=cached, error=str(exc)
                    )
                    return cached
                failures += 1
                delay = retry_delay(exc, failures)
                log.error(
                    "account_discovery_failed",
                    error=str(exc),
                    hint=discovery_hint(exc),
                    retry_in=round(delay),
                )
                now = clock()
                await bridge.publish(
                    setup_api_topic(base),
                    setup_api_json(exc, now, now + timedelta(seconds=delay)),
                    retain=True,
                )
                if await wait_event(stop_requested, delay):
                    raise DiscoveryStopped from None
    finally:
        await bridge.shutdown(SETUP_BRIDGE_STOP_BOUND)
        await cancel_and_wait(bridge_task, grace=0.5, bound=1.0)


__all__ = ["DiscoveryStopped", "discover_account", "discovery_hint", "setup_api_json"]
