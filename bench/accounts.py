"""P6: one process polling 1, 100 and 1,000 accounts, with bounded concurrency.

The daemon runs one account per process today, so this builds ``AccountAgent`` instances
directly (each with its own ``KrakenClient``, as a daemon would have) and publishes through one
shared ``MqttBridge`` to a real Mosquitto. A poll round is every agent's ``poll()`` under an
``asyncio.Semaphore``. The simulator runs in its own process (``serve``) and every agent run
happens in a fresh worker process (``agents``), so neither's memory or CPU pollutes the figures.

    python -m bench.accounts serve --accounts 1000
    python -m bench.accounts agents --accounts 1000 --sim URL --mqtt-port P [--tracemalloc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench.env import quiet_logs
from bench.procfs import cpu_seconds, rss_kb
from ioagent.config import MqttSettings, TariffSettings
from ioagent.kraken.client import KrakenClient
from ioagent.kraken.errors import KrakenError
from ioagent.mqtt.bridge import IncomingMessage, MqttBridge
from ioagent.mqtt.topics import Topics
from ioagent.runtime.agent import AccountAgent
from ioagent.simulator.control import SimulatorControl
from ioagent.simulator.server import CONTROL_PATH, GRAPHQL_PATH, run_simulator
from ioagent.simulator.state import SimDevice, SimPreferences, SimulatorState, default_schedules
from ioagent.timeutil import utc_now

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = 50
ROUNDS = 3


def account_number(index: int) -> str:
    return f"A-P6{index:06d}"


def api_key(index: int) -> str:
    return f"sk_test_bench_p6_{index:06d}"


def populated_state(accounts: int) -> SimulatorState:
    """``accounts`` accounts with one EV each, and three planned slots per EV."""
    from datetime import timedelta

    state = SimulatorState(utc_now)
    start = utc_now().replace(second=0, microsecond=0) + timedelta(hours=3)
    for index in range(accounts):
        number = account_number(index)
        state.add_account(number, api_key(index))
        device = state.add_device(
            SimDevice(
                id=state.new_device_id(),
                account=number,
                typename="SmartFlexVehicle",
                provider="TESLA",
                device_type="ELECTRIC_VEHICLES",
                make="Tesla",
                model="Model 3",
                preferences=SimPreferences(default_schedules()),
            )
        )
        for slot in range(3):
            at = start + timedelta(minutes=47 * slot + index % 30)
            state.add_dispatch(device, at, at + timedelta(minutes=31), "SMART", 3.6)
    return state


async def serve(accounts: int) -> None:
    async with run_simulator(populated_state(accounts)) as sim:
        print(sim.graphql_url, flush=True)
        await asyncio.Event().wait()


async def _noop(_message: IncomingMessage) -> None:
    return None


async def run_agents(
    accounts: int,
    sim_url: str,
    mqtt_host: str,
    mqtt_port: int,
    *,
    rounds: int = ROUNDS,
    concurrency: int = CONCURRENCY,
    trace: bool = False,
    sim_pid: int | None = None,
) -> dict[str, Any]:
    """Round 1 is timed in two parts: every agent's login (``KrakenClient.login``, which also
    opens its HTTP connection), then every agent's first ``poll`` (device list, then the poll
    request, then every topic published for the first time). Later rounds are ``poll`` only.
    Both parts run under the same semaphore; ``sim_pid`` adds the simulator's CPU per part."""
    bridge = MqttBridge(
        MqttSettings(host=mqtt_host, port=mqtt_port),
        client_id=f"bench-p6-{accounts}",
        status_topic=f"p6/{accounts}/status",
        subscriptions=[],
        on_message=_noop,
    )
    bridge_task = asyncio.create_task(bridge.run())
    await asyncio.wait_for(bridge.connected_event.wait(), 10)
    rss_before = rss_kb()
    if trace:
        tracemalloc.start()
    agents = [
        AccountAgent(
            account=account_number(index),
            client=KrakenClient(sim_url, SecretStr(api_key(index)), clock=utc_now),
            publisher=bridge,
            store=None,
            topics=Topics(f"p6/{accounts}", account_number(index)),
            tariff=TariffSettings(),
            clock=utc_now,
        )
        for index in range(accounts)
    ]
    gate = asyncio.Semaphore(concurrency)

    async def login(agent: AccountAgent) -> bool:
        async with gate:
            try:
                await agent.client.login()
            except KrakenError:
                return False
            return True

    async def poll(agent: AccountAgent) -> bool:
        async with gate:
            return (await agent.poll()).ok

    def sim_cpu() -> float:
        return cpu_seconds(sim_pid) if sim_pid is not None else math.nan

    control = SimulatorControl(sim_url.split(GRAPHQL_PATH)[0] + CONTROL_PATH)

    async def timed(step: Callable[[AccountAgent], Awaitable[bool]]) -> dict[str, Any]:
        calls_before = (await control.calls())["total"]
        started, cpu_started, sim_started = time.perf_counter(), cpu_seconds(), sim_cpu()
        results = await asyncio.gather(*(step(agent) for agent in agents))
        figures = {
            "seconds": time.perf_counter() - started,
            "agent_cpu": cpu_seconds() - cpu_started,
            "sim_cpu": sim_cpu() - sim_started,
            "failures": sum(1 for ok in results if not ok),
        }
        figures["requests"] = (await control.calls())["total"] - calls_before
        return figures

    parts: list[dict[str, Any]] = []
    try:
        logins = await timed(login)
        for _ in range(rounds):
            parts.append(await timed(poll))
        rss_after = rss_kb()
        traced = tracemalloc.get_traced_memory()[0] if trace else None
    finally:
        if trace:
            tracemalloc.stop()
        for agent in agents:
            await agent.client.close()
        await control.close()
        await bridge.shutdown()
        bridge_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bridge_task
    # Round 1 is the logins plus the first poll; its figures are the sums of both parts.
    rounds_ = [
        {key: logins[key] + parts[0][key] for key in logins},
        *parts[1:],
    ]
    return {
        "accounts": accounts,
        "concurrency": concurrency,
        "round_seconds": [round(r["seconds"], 3) for r in rounds_],
        "agent_cpu_seconds": [round(r["agent_cpu"], 2) for r in rounds_],
        "sim_cpu_seconds": [_rounded(r["sim_cpu"]) for r in rounds_],
        "failures": [r["failures"] for r in rounds_],
        "requests": [r["requests"] for r in rounds_],
        "round1_login": _part_figures(logins),
        "round1_first_poll": _part_figures(parts[0]),
        "planned_slots_seen": sum(len(a.plan) for a in agents),
        "rss_delta_kb_per_account": round((rss_after - rss_before) / accounts, 1),
        "rss_before_mb": round(rss_before / 1024, 1),
        "rss_after_mb": round(rss_after / 1024, 1),
        "traced_kb_per_account": None if traced is None else round(traced / 1024 / accounts, 1),
    }


def _part_figures(part: dict[str, Any]) -> dict[str, Any]:
    return {
        "seconds": round(part["seconds"], 3),
        "agent_cpu_seconds": round(part["agent_cpu"], 2),
        "sim_cpu_seconds": _rounded(part["sim_cpu"]),
        "failures": part["failures"],
        "requests": part["requests"],
    }


def _rounded(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds, 2)


@contextlib.contextmanager
def simulator_process(accounts: int) -> Iterator[tuple[str, int]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.accounts", "serve", "--accounts", str(accounts)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url:
            raise RuntimeError("the simulator process did not start")
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def worker(
    accounts: int,
    sim_url: str,
    mqtt_host: str,
    mqtt_port: int,
    trace: bool,
    sim_pid: int | None = None,
    concurrency: int = CONCURRENCY,
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.accounts",
        "agents",
        "--accounts",
        str(accounts),
        "--sim",
        sim_url,
        "--mqtt-host",
        mqtt_host,
        "--mqtt-port",
        str(mqtt_port),
        "--concurrency",
        str(concurrency),
    ]
    if sim_pid is not None:
        command += ["--sim-pid", str(sim_pid)]
    if trace:
        command.append("--tracemalloc")
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def many_accounts(sizes: list[int], mqtt_host: str, mqtt_port: int) -> dict[str, Any]:
    """A fresh simulator and worker process per size; tracemalloc in a separate run."""
    runs = []
    for size in sizes:
        with simulator_process(size) as (url, pid):
            timed = worker(size, url, mqtt_host, mqtt_port, trace=False, sim_pid=pid)
        with simulator_process(size) as (url, pid):
            traced = worker(size, url, mqtt_host, mqtt_port, trace=True)
        timed["traced_kb_per_account"] = traced["traced_kb_per_account"]
        timed["traced_round_seconds"] = traced["round_seconds"]
        runs.append(timed)
    return {"concurrency": CONCURRENCY, "rounds": ROUNDS, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accounts")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("--accounts", type=int, required=True)
    agents_parser = sub.add_parser("agents")
    agents_parser.add_argument("--accounts", type=int, required=True)
    agents_parser.add_argument("--sim", required=True)
    agents_parser.add_argument("--mqtt-host", default="127.0.0.1")
    agents_parser.add_argument("--mqtt-port", type=int, required=True)
    agents_parser.add_argument("--tracemalloc", action="store_true")
    agents_parser.add_argument("--sim-pid", type=int, default=None)
    agents_parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = parser.parse_args()
    quiet_logs()
    if args.command == "serve":
        asyncio.run(serve(args.accounts))
        return
    result = asyncio.run(
        run_agents(
            args.accounts,
            args.sim,
            args.mqtt_host,
            args.mqtt_port,
            trace=args.tracemalloc,
            sim_pid=args.sim_pid,
            concurrency=args.concurrency,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
