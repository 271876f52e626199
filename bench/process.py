"""P4 (steady RSS and CPU) and P5 (cold start) of ``python -m ioagent run`` as a real process.

The simulator runs in the bench process; the daemon is a subprocess with its own TOML config,
pointed at the simulator and a private Mosquitto. A subscriber that is already connected
timestamps what the daemon publishes; /proc gives the daemon's memory and CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.env import mosquitto, peak_now_tariff
from bench.procfs import cpu_seconds, rss_kb, sample
from bench.stats import summary
from ioagent.mqtt.topics import Topics
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_EV_ID,
    SimulatorState,
)
from ioagent.timeutil import utc_now
from tests.broker import Broker
from tests.harness import Watcher, watching

REPO = Path(__file__).resolve().parent.parent
BASE_TOPIC = "ioagent"


def write_config(path: Path, broker: Broker, sim: RunningSimulator, data: Path) -> Path:
    tariff = peak_now_tariff()
    path.write_text(
        "\n".join(
            [
                "[octopus]",
                f'api_key = "{DEFAULT_API_KEY}"',
                f'account_number = "{DEFAULT_ACCOUNT}"',
                f'api_url = "{sim.graphql_url}"',
                "[mqtt]",
                f'host = "{broker.host}"',
                f"port = {broker.port}",
                f'base_topic = "{BASE_TOPIC}"',
                "[tariff]",
                f'offpeak_start = "{tariff["offpeak_start"]}"',
                f'offpeak_end = "{tariff["offpeak_end"]}"',
                "round_to_half_hour = false",
                "[storage]",
                f'path = "{data / "ioagent.db"}"',
                "[logging]",
                'level = "warning"',
                'format = "json"',
                "",
            ]
        )
    )
    return path


@dataclass
class DaemonProcess:
    process: asyncio.subprocess.Process
    spawned_at: float

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@contextlib.asynccontextmanager
async def daemon_process(config: Path, log: Path) -> AsyncIterator[DaemonProcess]:
    with log.open("ab") as sink:
        spawned_at = time.time()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ioagent",
            "run",
            "--config",
            str(config),
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    handle = DaemonProcess(process, spawned_at)
    try:
        yield handle
    finally:
        await handle.stop()


async def send_command(watcher: Watcher, topics: Topics, name: str, value: str) -> dict[str, Any]:
    """Publish a command with a fresh transaction id and wait for its reply."""
    transaction = f"b{time.monotonic_ns()}"
    topic = topics.refresh if name == "refresh" else topics.command(name)
    mark = len(watcher.messages)
    await watcher.publish(topic, json.dumps({"value": value, "transaction": transaction}))
    seen = await watcher.wait_for(
        topics.response,
        lambda p: json.loads(p).get("transaction") == transaction,
        after=mark,
        timeout=15,
    )
    reply: dict[str, Any] = json.loads(seen.payload)
    return reply


def python_baselines() -> dict[str, int]:
    """RSS (kB) of a bare interpreter and of one that has imported the daemon's modules."""
    probe = "from bench.procfs import rss_kb; {imports}print(rss_kb())"
    results = {}
    for name, imports in (
        ("bare_python_kb", ""),
        ("imports_only_kb", "import ioagent.runtime.daemon; "),
    ):
        out = subprocess.run(
            [sys.executable, "-c", probe.format(imports=imports)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        results[name] = int(out.stdout.strip().splitlines()[-1])
    return results


# --- P5 --------------------------------------------------------------------------------------


async def cold_starts(runs: int, workdir: Path | None = None) -> dict[str, Any]:
    """Spawn to first publish and to the first ``offpeak``; cold = empty data directory,
    warm = the database of the previous run (restored topics are re-published at once)."""
    with tempfile.TemporaryDirectory(prefix="ioagent-bench-") as tmp:
        root = workdir or Path(tmp)
        with mosquitto(root) as broker:
            async with run_simulator(SimulatorState.with_default_account(clock=utc_now)) as sim:
                topics = Topics(BASE_TOPIC, DEFAULT_ACCOUNT)
                results: dict[str, list[float]] = {
                    "cold_first_publish_s": [],
                    "cold_offpeak_s": [],
                    "warm_first_publish_s": [],
                    "warm_offpeak_s": [],
                }
                async with watching(broker, f"{BASE_TOPIC}/#") as watcher:
                    for run in range(runs):
                        data = root / f"data{run}"
                        data.mkdir()
                        config = write_config(root / f"cold{run}.toml", broker, sim, data)
                        for kind in ("cold", "warm"):
                            first, offpeak = await _one_start(watcher, topics, config, root)
                            results[f"{kind}_first_publish_s"].append(first)
                            results[f"{kind}_offpeak_s"].append(offpeak)
    return {name: summary(values, digits=3) for name, values in results.items()} | {"runs": runs}


async def _one_start(
    watcher: Watcher, topics: Topics, config: Path, root: Path
) -> tuple[float, float]:
    mark = len(watcher.messages)
    async with daemon_process(config, root / "daemon.log") as daemon:
        offpeak = await watcher.wait_for(topics.offpeak, after=mark, timeout=30)
        first = min(m.at for m in watcher.messages[mark:] if m.topic.startswith(topics.root))
        spawned = daemon.spawned_at
    return first - spawned, offpeak.at - spawned


# --- P4 --------------------------------------------------------------------------------------


async def steady_state(
    publishes: int, idle_seconds: float, workdir: Path | None = None
) -> dict[str, Any]:
    """Drive ``publishes`` MQTT messages out of the daemon, then watch it idle."""
    with tempfile.TemporaryDirectory(prefix="ioagent-bench-") as tmp:
        root = workdir or Path(tmp)
        with mosquitto(root) as broker:
            state = SimulatorState.with_default_account(clock=utc_now)
            async with run_simulator(state) as sim:
                data = root / "data"
                data.mkdir()
                config = write_config(root / "steady.toml", broker, sim, data)
                topics = Topics(BASE_TOPIC, DEFAULT_ACCOUNT)
                device = state.device(DEFAULT_EV_ID)
                first = utc_now().replace(microsecond=0) + timedelta(seconds=8)
                for index in range(60):
                    start = first + timedelta(seconds=5 * index)
                    state.add_dispatch(device, start, start + timedelta(seconds=2), "SMART", 0.1)
                async with (
                    watching(broker, f"{BASE_TOPIC}/#", "homeassistant/#") as watcher,
                    daemon_process(config, root / "daemon.log") as daemon,
                ):
                    await watcher.wait_for(topics.offpeak, timeout=30)
                    # Discovery is published after the command subscriptions are in place.
                    async with asyncio.timeout(30):
                        while not any(
                            m.topic.startswith("homeassistant/") for m in watcher.messages
                        ):
                            await asyncio.sleep(0.05)
                    started = sample(daemon.pid)
                    mark = len(watcher.messages)
                    wall = time.monotonic()
                    commands = refreshes_ok = 0

                    def daemon_messages() -> int:
                        return sum(
                            1
                            for m in watcher.messages[mark:]
                            if not m.topic.startswith(f"{topics.root}/set/")
                            and m.topic != topics.refresh
                        )

                    while daemon_messages() < publishes:
                        if commands % 5 == 4:
                            reply = await send_command(watcher, topics, "refresh", "now")
                            refreshes_ok += reply["status"] == "ok"
                        else:
                            value = "90" if commands % 2 else "80"
                            await send_command(watcher, topics, "target_soc", value)
                        commands += 1
                        await asyncio.sleep(0.5)
                    driven_seconds = time.monotonic() - wall
                    after = sample(daemon.pid)
                    rss_trace = [after.rss_kb]
                    idle_started = time.monotonic()
                    while time.monotonic() - idle_started < idle_seconds:
                        await asyncio.sleep(1.0)
                        rss_trace.append(rss_kb(daemon.pid))
                    idle = sample(daemon.pid)
                    idle_wall = time.monotonic() - idle_started
                    driven = daemon_messages()
    return {
        "publishes": driven,
        "commands": commands,
        "refreshes_accepted": refreshes_ok,
        "drive_seconds": round(driven_seconds, 1),
        "rss_after_start_mb": round(started.rss_kb / 1024, 1),
        "rss_after_publishes_mb": round(after.rss_kb / 1024, 1),
        "rss_idle_max_mb": round(max(rss_trace) / 1024, 1),
        "cpu_start_s": round(started.cpu_seconds, 2),
        "cpu_drive_s": round(after.cpu_seconds - started.cpu_seconds, 2),
        "cpu_ms_per_publish": round(
            1000 * (after.cpu_seconds - started.cpu_seconds) / max(1, driven), 2
        ),
        "idle_seconds": round(idle_wall, 1),
        "idle_cpu_percent": round(100 * (idle.cpu_seconds - after.cpu_seconds) / idle_wall, 2),
        **python_baselines(),
    }


__all__ = ["cold_starts", "cpu_seconds", "python_baselines", "steady_state"]
