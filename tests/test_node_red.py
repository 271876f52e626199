"""The example Node-RED flows, loaded into a real Node-RED 4 next to the real daemon.

One Node-RED process runs all three flows from ``examples/node-red/`` against a real Mosquitto,
with ioagent running in-process against the Kraken simulator. Node-RED itself is installed from
npm into ``.cache/node-red/`` (git-ignored) on the first run and reused afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_EV_ID, default_schedules
from tests.broker import Broker, free_port
from tests.clocks import suite_now
from tests.harness import RunningDaemon, running_daemon

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "node-red"
NODE_RED_DIR = REPO / ".cache" / "node-red"
NODE_RED_BIN = NODE_RED_DIR / "node_modules" / ".bin" / "node-red"
NODE_RED_SPEC = "node-red@4"  # node-red 5 needs Node.js >= 22.9; these machines have Node 20

ACCOUNT_PLACEHOLDER = "A-XXXXXXXX"
BROKER_CONFIG_ID = "ioagent-broker"
RELAY_TOPIC = "home/relay/battery_charge/set"
CORE_NODE_TYPES = {
    "tab",
    "comment",
    "inject",
    "debug",
    "function",
    "change",
    "switch",
    "mqtt in",
    "mqtt out",
    "mqtt-broker",
    "json",
    "delay",
    "trigger",
    "rbe",
    "link in",
    "link out",
}
LONDON = ZoneInfo("Europe/London")


def flow_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


def load_flow(path: Path) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return nodes


# --- installing Node-RED ---------------------------------------------------------------------


def installed_node_red_version() -> str | None:
    manifest = NODE_RED_DIR / "node_modules" / "node-red" / "package.json"
    try:
        version: str = json.loads(manifest.read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return None
    return version


def install_node_red() -> Path:
    """Node-RED 4 in .cache/node-red, installed by npm unless it is already there."""
    version = installed_node_red_version()
    if version is not None and version.startswith("4.") and NODE_RED_BIN.exists():
        return NODE_RED_BIN
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            "npm is not installed, so this test cannot install Node-RED: "
            "install Node.js 20 and npm (apt-get install nodejs npm)"
        )
    NODE_RED_DIR.mkdir(parents=True, exist_ok=True)
    manifest = NODE_RED_DIR / "package.json"
    if not manifest.exists():
        # Without a package.json npm could pick a parent folder as the install prefix.
        manifest.write_text('{"private": true}\n', encoding="utf-8")
    command = [npm, "install", "--no-audit", "--no-fund", "--no-update-notifier", NODE_RED_SPEC]
    try:
        result = subprocess.run(
            command, cwd=NODE_RED_DIR, capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`npm install {NODE_RED_SPEC}` took more than 10 minutes; is npm reachable?")
    if result.returncode != 0 or not NODE_RED_BIN.exists():
        output = (result.stdout + result.stderr).strip()[-2000:]
        pytest.fail(
            f"`npm install {NODE_RED_SPEC}` in {NODE_RED_DIR} failed (exit {result.returncode}); "
            f"this test needs the npm registry to install Node-RED once.\n{output}"
        )
    return NODE_RED_BIN


@pytest.fixture(scope="session")
def node_red_bin() -> Path:
    return install_node_red()


# --- running Node-RED ------------------------------------------------------------------------


def flows_for_test(broker: Broker, account: str) -> list[dict[str, Any]]:
    """All example flows in one list: one shared broker node pointed at the test broker."""
    by_id: dict[str, dict[str, Any]] = {}
    for path in flow_files():
        for node in load_flow(path):
            known = by_id.setdefault(node["id"], node)
            assert known == node, f"{path.name}: node {node['id']} differs from another file's"
    by_id[BROKER_CONFIG_ID] |= {"broker": broker.host, "port": str(broker.port)}
    text = json.dumps(list(by_id.values()))
    assert ACCOUNT_PLACEHOLDER in text
    flows: list[dict[str, Any]] = json.loads(text.replace(ACCOUNT_PLACEHOLDER, account))
    return flows


@dataclass
class NodeRed:
    process: asyncio.subprocess.Process
    url: str
    log: str = ""
    ended: bool = False
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def read_log(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            async with self._changed:
                self.log += line.decode("utf-8", "replace")
                self._changed.notify_all()
        async with self._changed:
            self.ended = True
            self._changed.notify_all()

    async def wait_for_log(
        self, pattern: str, *, timeout: float = 20.0, after: int = 0
    ) -> re.Match[str]:
        """The first match of the regex ``pattern`` in the log from character ``after`` on."""
        regex = re.compile(pattern)
        try:
            async with asyncio.timeout(timeout), self._changed:
                while (found := regex.search(self.log, after)) is None:
                    if self.ended:
                        pytest.fail(f"Node-RED exited before logging {pattern!r}:\n{self.log}")
                    await self._changed.wait()
                return found
        except TimeoutError:
            pytest.fail(f"Node-RED did not log {pattern!r} within {timeout}s:\n{self.log[-4000:]}")

    async def inject(self, node_id: str) -> None:
        """Press an inject node's button, as the editor does."""
        async with aiohttp.ClientSession() as http, http.post(f"{self.url}/inject/{node_id}") as r:
            assert r.status == 200, await r.text()


def write_user_dir(user_dir: Path, flows: list[dict[str, Any]]) -> Path:
    """A fresh Node-RED user directory holding only flows.json; Node-RED adds the rest."""
    user_dir.mkdir(parents=True)
    (user_dir / "flows.json").write_text(json.dumps(flows, indent=1), encoding="utf-8")
    return user_dir


@contextlib.asynccontextmanager
async def running_node_red(binary: Path, user_dir: Path) -> AsyncIterator[NodeRed]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        str(binary),
        "--userDir",
        str(user_dir),
        "--port",
        str(port),
        "--define",
        "uiHost=127.0.0.1",
        "--no-telemetry",
        cwd=user_dir,
        env={**os.environ, "NODE_RED_ENABLE_PROJECTS": "false"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    red = NodeRed(process, f"http://127.0.0.1:{port}")
    reader = asyncio.create_task(red.read_log(), name="node-red-log")
    try:
        await red.wait_for_log(r"\[info\] Started flows", timeout=60)
        await red.wait_for_log(r"\[info\] \[mqtt-broker:[^\]]*\] Connected to broker")
        yield red
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(reader, timeout=5)


# --- the tests -------------------------------------------------------------------------------


def test_example_flows_use_core_nodes_and_are_self_describing() -> None:
    files = flow_files()
    assert [f.name for f in files] == [
        "01-debug-all-topics.json",
        "02-offpeak-relay.json",
        "03-set-target-and-ready-by.json",
    ]
    for path in files:
        nodes = load_flow(path)
        ids = [n["id"] for n in nodes]
        assert len(ids) == len(set(ids)), path.name
        assert {n["type"] for n in nodes} <= CORE_NODE_TYPES, path.name
        placed = [n for n in nodes if n["type"] not in {"tab", "mqtt-broker"}]
        top_left = min(placed, key=lambda n: (n["y"], n["x"]))
        assert top_left["type"] == "comment" and top_left["info"].strip(), path.name
        for node in nodes:
            for output in node.get("wires", []):
                assert set(output) <= set(ids), f"{path.name}: {node['id']} wired to nowhere"
            if node["type"].startswith("mqtt ") and node["type"] != "mqtt-broker":
                assert node["broker"] == BROKER_CONFIG_ID, path.name
            if node["type"] == "mqtt out":
                assert node["retain"] == "false", f"{path.name}: commands must not be retained"
        (broker,) = [n for n in nodes if n["type"] == "mqtt-broker"]
        assert (broker["broker"], broker["port"]) == ("localhost", "1883"), path.name


def peak_now_tariff() -> dict[str, object]:
    """A fixed window far from now and exact slot times, so only our slots make off-peak."""
    local = suite_now().astimezone(LONDON)
    return {
        "offpeak_start": (local + timedelta(hours=6)).strftime("%H:%M"),
        "offpeak_end": (local + timedelta(hours=8)).strftime("%H:%M"),
        "round_to_half_hour": False,
    }


async def add_slot_and_refresh(
    d: RunningDaemon, sim: RunningSimulator, start: datetime, end: datetime
) -> None:
    device = sim.state.device(DEFAULT_EV_ID)
    sim.state.add_dispatch(device, start, end, "SMART", 0.5)
    assert (await d.command("refresh", "now"))["status"] == "ok"


# Its first run on a new machine installs Node-RED (npm, up to 10 minutes).
@pytest.mark.timeout(900)
async def test_example_flows_in_a_real_node_red(
    node_red_bin: Path, broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    device = simulator.state.device(DEFAULT_EV_ID)
    # Start away from the flow's 80 % / 07:30 so that its commands visibly change something.
    device.preferences.schedules = default_schedules(60.0, time(6, 0))
    async with running_daemon(
        broker,
        simulator,
        tmp_path,
        tariff=peak_now_tariff(),
        # No re-polls after the commands: the refreshes below must stay inside the call budget.
        polling={"command_rechecks": []},
    ) as d:
        user_dir = write_user_dir(tmp_path / "node-red", flows_for_test(broker, DEFAULT_ACCOUNT))
        async with running_node_red(node_red_bin, user_dir) as red:
            # Flow 1: every ioagent topic, one line each, in Node-RED's log.
            await red.wait_for_log(re.escape(f"[debug:ioagent topic] {d.topics.status} = online"))
            await red.wait_for_log(re.escape(f"[debug:ioagent topic] {d.topics.offpeak} = false"))
            await red.wait_for_log(re.escape(f"[debug:ioagent topic] {d.topics.target_soc} = 60"))

            # Flow 3: the inject buttons send commands for the (substituted) account.
            mark = len(red.log)
            await red.inject("ioagent-f3-target")
            await d.watcher.wait_for(d.topics.target_soc, lambda p: p == "80")
            await red.inject("ioagent-f3-ready-by")
            await d.watcher.wait_for(d.topics.ready_by, lambda p: p == "07:30")
            assert {(s.max, s.time) for s in device.preferences.schedules} == {(80.0, time(7, 30))}
            sent = [json.loads(p) for p in d.watcher.values(d.topics.command("target_soc"))]
            assert sent == [{"value": 80, "transaction": "node-red-target-soc"}]
            assert not any(m.retain for m in d.watcher.messages if "/set/" in m.topic)
            for command, transaction in (
                ("target_soc", "node-red-target-soc"),
                ("ready_by", "node-red-ready-by"),
            ):
                await red.wait_for_log(
                    rf"\[debug:ioagent reply\]\s*\{{\s*command: '{command}',\s*status: 'ok',"
                    rf"\s*transaction: '{transaction}'\s*\}}",
                    after=mark,
                )

            # Flow 2: the relay follows offpeak, once per change, and goes OFF with ioagent.
            await d.watcher.wait_for(RELAY_TOPIC, lambda p: p == "OFF")
            start = suite_now().replace(microsecond=0) + timedelta(seconds=4)
            await add_slot_and_refresh(d, simulator, start, start + timedelta(seconds=3))
            offpeak_on = await d.watcher.wait_for(d.topics.offpeak, lambda p: p == "true")
            relay_on = await d.watcher.wait_for(RELAY_TOPIC, lambda p: p == "ON")
            assert relay_on.at >= offpeak_on.at
            after_on = d.watcher.messages.index(relay_on)
            offpeak_off = await d.watcher.wait_for(
                d.topics.offpeak, lambda p: p == "false", after=after_on
            )
            relay_off = await d.watcher.wait_for(RELAY_TOPIC, lambda p: p == "OFF", after=after_on)
            assert relay_off.at >= offpeak_off.at

            start = suite_now().replace(microsecond=0) + timedelta(seconds=2)
            await add_slot_and_refresh(d, simulator, start, start + timedelta(minutes=10))
            relay_on = await d.watcher.wait_for(
                RELAY_TOPIC, lambda p: p == "ON", after=d.watcher.messages.index(relay_off)
            )
            await d.stop()  # publishes ioagent/<account>/status = offline, as its last will would
            await d.watcher.wait_for(
                RELAY_TOPIC, lambda p: p == "OFF", after=d.watcher.messages.index(relay_on)
            )
            assert d.watcher.last(d.topics.offpeak) == "true"  # stale, hence the fail-safe OFF
            assert d.watcher.values(RELAY_TOPIC) == ["OFF", "ON", "OFF", "ON", "OFF"]
            relay_messages = [m for m in d.watcher.messages if m.topic == RELAY_TOPIC]
            assert not any(m.retain for m in relay_messages)
