"""No secret ever leaves the daemon: not in its output, not on any MQTT topic, not to the broker.

``ioagent run`` runs as a process (debug logging, JSON) with a recognisable API key and broker
password, through logins, token refreshes, re-logins, API faults, commands and a broker restart.
The simulator records every JWT and refresh token it hands out; then the whole output, every MQTT
message on ``#`` and the broker's log are searched for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

from ioagent.mqtt.topics import Topics
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, TokenGrant
from tests.canary import secret
from tests.faults import client_for
from tests.faults.conftest import IOAGENT_PASSWORD, IOAGENT_USER, SecuredBroker
from tests.faults.test_kill_restart import DaemonProcess, write_config

CANARY_KEY = secret("sk_live_FAKEcanaryKey00000001")
TOPICS = Topics("ioagent", DEFAULT_ACCOUNT)


class Capture:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def payloads(self, topic: str) -> list[str]:
        return [p.decode("utf-8", "replace") for t, p in self.messages if t == topic]

    async def wait(self, topic: str, predicate: object, after: int = 0, timeout: float = 20) -> str:
        async with asyncio.timeout(timeout):
            while True:
                for t, payload in self.messages[after:]:
                    text = payload.decode("utf-8", "replace")
                    if t == topic and callable(predicate) and predicate(text):
                        return text
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def capturing(secured: SecuredBroker) -> AsyncIterator[Capture]:
    capture = Capture()
    ready = asyncio.Event()

    async def run() -> None:
        while True:
            with contextlib.suppress(Exception):
                async with client_for(secured.broker, **secured.observer_options()) as client:
                    await client.subscribe("#", qos=1)
                    ready.set()
                    async for message in client.messages:
                        payload = message.payload
                        raw = payload if isinstance(payload, bytes) else str(payload).encode()
                        capture.messages.append((str(message.topic), raw))
            await asyncio.sleep(0.2)

    task = asyncio.create_task(run())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield capture
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def record_tokens(simulator: RunningSimulator) -> list[TokenGrant]:
    state = simulator.state
    grants: list[TokenGrant] = []
    by_key, by_refresh = state.obtain_token_with_key, state.obtain_token_with_refresh

    def with_key(api_key: str) -> TokenGrant:
        grants.append(by_key(api_key))
        return grants[-1]

    def with_refresh(refresh_token: str) -> TokenGrant:
        grants.append(by_refresh(refresh_token))
        return grants[-1]

    state.obtain_token_with_key = with_key  # instrumentation: record each grant
    state.obtain_token_with_refresh = with_refresh  # instrumentation: record each grant
    return grants


def api_after(capture: Capture, mark: int, wanted: str, timeout: float = 20) -> Awaitable[str]:
    return capture.wait(
        TOPICS.api, lambda p: json.loads(p)["state"] == wanted, after=mark, timeout=timeout
    )


async def test_no_secret_in_output_topics_or_broker_log(
    secured_broker: SecuredBroker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    state = simulator.state
    state.add_account(DEFAULT_ACCOUNT, CANARY_KEY)  # the default account now logs in with it
    grants = record_tokens(simulator)
    config = write_config(tmp_path / "config.toml", secured_broker.broker, simulator, CANARY_KEY)
    config.write_text(
        config.read_text().replace(
            "[mqtt]\n",
            f'[mqtt]\nusername = "{IOAGENT_USER}"\npassword = "{IOAGENT_PASSWORD}"\n'
            f'tls = {{ enabled = true, ca_file = "{secured_broker.ca_file}" }}\n',
        )
    )
    output = tmp_path / "daemon.log"
    async with capturing(secured_broker) as capture:
        daemon = await DaemonProcess.start(config, output)
        try:
            await capture.wait(TOPICS.api, lambda p: json.loads(p)["last_success"] is not None)

            async def command(name: str, value: object, transaction: str) -> dict[str, object]:
                mark = len(capture.messages)
                async with client_for(
                    secured_broker.broker, **secured_broker.observer_options()
                ) as client:
                    body = json.dumps({"value": value, "transaction": transaction})
                    topic = TOPICS.refresh if name == "refresh" else TOPICS.command(name)
                    await client.publish(topic, body, qos=1)
                reply = await capture.wait(
                    TOPICS.response, lambda p: json.loads(p).get("transaction") == transaction,
                    after=mark,
                )  # fmt: skip
                answer: dict[str, object] = json.loads(reply)
                return answer

            assert (await command("target_soc", 65, "c1"))["status"] == "ok"
            assert (await command("target_soc", "abc", "c2"))["status"] == "error"

            issued = len(grants)
            state.expire_tokens()  # the next call is refused: refresh with the refresh token
            assert (await command("refresh", None, "c3"))["status"] == "ok"
            async with asyncio.timeout(10):
                while len(grants) == issued:
                    await asyncio.sleep(0.05)

            issued = len(grants)
            state.expire_tokens(refresh=True)  # the refresh token too: log in with the key again
            assert (await command("smart_control", "on", "c4"))["status"] == "ok"
            async with asyncio.timeout(10):
                while len(grants) == issued:
                    await asyncio.sleep(0.05)

            mark = len(capture.messages)
            # Only the poll's planned-dispatch query may meet it: an http_500 for any request
            # was once taken by the device re-read that follows the smart_control reply, and
            # then no poll ever failed (seen in a loaded soak run).
            state.add_fault("kt_4340", 1)
            # The re-logins above may have used up this minute's 4 queries (a retry after a
            # refused token is paid from the budget, or deferred and backed off): then the
            # refresh is refused, and the poll it asked for runs, and meets the fault, once the
            # budget or the back-off allows.
            reply = await command("refresh", None, "c5")
            assert reply["status"] == "ok" or str(reply["error"]).startswith("not polled now")
            await api_after(capture, mark, "degraded", timeout=90)

            mark = len(capture.messages)
            await asyncio.to_thread(secured_broker.broker.restart)
            await capture.wait(TOPICS.status, lambda p: p == "online", after=mark)
            assert await daemon.stop(signal.SIGTERM) == 0
        finally:
            await daemon.ensure_dead()

    text = output.read_text()
    assert "kraken_reauthenticating" in text, "the slice must include a token refresh"
    assert "connected to the MQTT broker" in text
    assert len(grants) >= 3
    secrets = {CANARY_KEY, IOAGENT_PASSWORD}
    for grant in grants:
        secrets |= {grant.token, grant.token.rsplit(".", 1)[-1], grant.refresh_token}
    haystacks = {
        "daemon output": text,
        "mqtt topics": "\n".join(topic for topic, _ in capture.messages),
        "mqtt payloads": "\n".join(p.decode("utf-8", "replace") for _, p in capture.messages),
        "broker log": secured_broker.broker.log(),
    }
    for where, haystack in haystacks.items():
        assert haystack, f"nothing captured from the {where}"
        leaked = [secret[:12] + "…" for secret in secrets if secret in haystack]
        assert not leaked, f"secrets in the {where}: {leaked}"
    print(
        f"\nsecrets: {len(secrets)} searched in {len(text.splitlines())} log lines and "
        f"{len(capture.messages)} MQTT messages; 0 found"
    )
