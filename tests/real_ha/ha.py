"""A real Home Assistant in the forky chroot that scripts/real-ha builds, driven over its APIs.

HA runs as ``chroot <root> <venv python> -m homeassistant -c <config> --skip-pip``. The chroot
shares the host's network, so HA and the test reach each other (and Mosquitto) on 127.0.0.1.
Everything is set up the way a user's browser would: onboarding creates the owner account, a
config flow creates the MQTT integration, and controls are HA's own service calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.broker import free_port

CLIENT_ID = "http://127.0.0.1/"
USERNAME = "ioagent-test"
# A throw-away owner of a throw-away HA bound to 127.0.0.1; not a secret of the project.
PASSWORD = "real-ha-test-password"
START_TIMEOUT = 240.0


def configuration_yaml(port: int) -> str:
    return f"""\
homeassistant:
  name: ioagent real-HA test
  latitude: 51.5
  longitude: -0.12
  elevation: 10
  unit_system: metric
  time_zone: Europe/London
  country: GB
  currency: GBP
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
onboarding:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: debug
"""


@dataclass
class HomeAssistant:
    """One HA process; :meth:`start` it, :meth:`onboard` once, then use the REST helpers."""

    root: Path
    python: str
    config_dir: Path
    """Inside the chroot's file system, as the host sees it."""
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    token: str | None = None
    session: aiohttp.ClientSession | None = None
    starts: list[float] = field(default_factory=list)
    """Seconds each start took until the API answered."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.config_dir / "home-assistant.log"

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(configuration_yaml(self.port))

    async def start(self) -> None:
        assert self.process is None, "already running"
        if not (self.config_dir / "configuration.yaml").exists():
            self.write_config()
        inside = "/" + str(self.config_dir.relative_to(self.root))
        started = time.monotonic()
        with (self.config_dir / "stdout.log").open("ab") as sink:
            self.process = await asyncio.create_subprocess_exec(
                "chroot",
                str(self.root),
                self.python,
                "-m",
                "homeassistant",
                "--config",
                inside,
                "--skip-pip",
                stdout=sink,
                stderr=sink,
                start_new_session=True,
            )
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await self._wait_until_up()
        self.starts.append(time.monotonic() - started)

    async def _wait_until_up(self) -> None:
        assert self.session is not None and self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"HA exited with {self.process.returncode}: {self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                # The onboarding view answers without a login, as soon as HTTP is up.
                async with self.session.get(f"{self.url}/api/onboarding") as response:
                    if response.status == 200 and (self.token is None or await self._api_up()):
                        return
            await asyncio.sleep(1.0)
        raise TimeoutError(f"HA did not start in {START_TIMEOUT:.0f} s: {self.log_tail()}")

    async def _api_up(self) -> bool:
        assert self.session is not None
        async with self.session.get(f"{self.url}/api/", headers=self._headers()) as response:
            return response.status == 200

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        process = self.process
        if process is None:
            return 0
        if process.returncode is None:
            process.send_signal(signum)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        self.process = None
        return process.returncode or 0

    async def close(self) -> None:
        await self.stop()
        if self.session is not None:
            await self.session.close()
            self.session = None

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for path in (self.log_path, self.config_dir / "stdout.log"):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def log_lines(self, *levels: str) -> list[str]:
        """Lines of home-assistant.log at one of ``levels`` (``WARNING``, ``ERROR``, ...)."""
        if not self.log_path.exists():
            return []
        return [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if any(f" {level} " in line for level in levels)
        ]

    # --- onboarding and integrations ------------------------------------------------------

    async def onboard(self) -> None:
        """Create the owner account as the onboarding screen would, and log in."""
        assert self.session is not None
        body = {
            "client_id": CLIENT_ID,
            "name": "ioagent test",
            "username": USERNAME,
            "password": PASSWORD,
            "language": "en",
        }
        async with self.session.post(f"{self.url}/api/onboarding/users", json=body) as response:
            assert response.status == 200, await response.text()
            code = (await response.json())["auth_code"]
        form = {"grant_type": "authorization_code", "code": code, "client_id": CLIENT_ID}
        async with self.session.post(f"{self.url}/auth/token", data=form) as response:
            assert response.status == 200, await response.text()
            short_lived = (await response.json())["access_token"]
        # A long-lived token survives HA restarts without a refresh dance.
        self.token = short_lived
        reply = await self.ws(
            {"type": "auth/long_lived_access_token", "client_name": "ioagent", "lifespan": 30}
        )
        self.token = str(reply)

    async def add_mqtt(self, host: str, port: int) -> dict[str, Any]:
        """The MQTT integration as a config entry, created through its config flow."""
        flow = await self.post("/api/config/config_entries/flow", {"handler": "mqtt"})
        result = flow
        if flow.get("type") == "menu":  # newer flows ask what to set up first
            option = "broker" if "broker" in flow.get("menu_options", []) else None
            assert option, flow
            result = await self.post(
                f"/api/config/config_entries/flow/{flow['flow_id']}", {"next_step_id": option}
            )
        if result.get("type") == "form":
            result = await self.post(
                f"/api/config/config_entries/flow/{result['flow_id']}",
                # HA 2026 keeps the advanced options in a section that must be present.
                {
                    "broker": host,
                    "port": port,
                    "other_settings": {"set_client_cert": False, "set_ca_cert": "off"},
                },
            )
        assert result.get("type") == "create_entry", result
        return result

    # --- REST and websocket ---------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def get(self, path: str) -> Any:
        assert self.session is not None
        async with self.session.get(self.url + path, headers=self._headers()) as response:
            assert response.status == 200, f"GET {path}: {response.status} {await response.text()}"
            return await response.json()

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        assert self.session is not None
        async with self.session.post(self.url + path, json=body, headers=self._headers()) as r:
            assert r.status in (200, 201), f"POST {path}: {r.status} {await r.text()}"
            return await r.json()

    @contextlib.asynccontextmanager
    async def websocket(self) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """HA's websocket API, authenticated."""
        assert self.session is not None
        async with self.session.ws_connect(f"{self.url}/api/websocket") as socket:
            assert (await socket.receive_json())["type"] == "auth_required"
            await socket.send_json({"type": "auth", "access_token": self.token})
            assert (await socket.receive_json())["type"] == "auth_ok"
            yield socket

    async def ws(self, message: dict[str, Any]) -> Any:
        """One websocket command; returns its ``result``."""
        async with self.websocket() as socket:
            await socket.send_json({"id": 1, **message})
            reply = await socket.receive_json()
            assert reply.get("success"), reply
            return reply["result"]

    async def states(self) -> dict[str, dict[str, Any]]:
        return {state["entity_id"]: state for state in await self.get("/api/states")}

    async def state(self, entity_id: str) -> dict[str, Any] | None:
        return (await self.states()).get(entity_id)

    async def call(self, domain: str, service: str, **data: Any) -> None:
        await self.post(f"/api/services/{domain}/{service}", data)

    async def entity_registry(self) -> dict[str, dict[str, Any]]:
        entries = await self.ws({"type": "config/entity_registry/list"})
        return {entry["entity_id"]: entry for entry in entries}

    async def state_after(
        self,
        entity_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        action: Callable[[], Awaitable[None]],
        *,
        timeout: float = 30.0,
        what: str = "",
    ) -> dict[str, Any]:
        """Run ``action``, then return the first new state of ``entity_id`` that matches, from
        HA's ``state_changed`` events (subscribed before the action).

        For an event entity, whose state is only the last event: two events from one poll
        replace each other faster than :meth:`wait_state` can see the first.
        """
        seen: list[dict[str, Any]] = []
        async with self.websocket() as socket:
            await socket.send_json(
                {"id": 1, "type": "subscribe_events", "event_type": "state_changed"}
            )
            assert (await socket.receive_json()).get("success")
            await action()
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        message = await socket.receive_json()
                        data = message.get("event", {}).get("data", {})
                        if data.get("entity_id") != entity_id or not data.get("new_state"):
                            continue
                        seen.append(data["new_state"])
                        if predicate(data["new_state"]):
                            return dict(data["new_state"])
            except TimeoutError:
                shown = json.dumps(seen[-3:], indent=1)
                raise AssertionError(
                    f"{entity_id}: {what or 'condition'} not seen: {shown}"
                ) from None

    async def wait_state(
        self,
        entity_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 30.0,
        what: str = "",
    ) -> dict[str, Any]:
        """Poll ``entity_id`` until ``predicate(state)`` holds; the last state is in the error."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            last = await self.state(entity_id)
            if last is not None and predicate(last):
                return last
            if time.monotonic() > deadline:
                shown = json.dumps(last, indent=1) if last else "no such entity"
                raise AssertionError(f"{entity_id}: {what or 'condition'} not met: {shown}")
            await asyncio.sleep(0.5)
