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
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench.env import quiet_logs
from bench.procfs import cpu_seconds, rss_kb
from ioagent.agent import AccountAgent
from ioagent.bridge import IncomingMessage, MqttBridge
from ioagent.config import MqttSettings, TariffSettings
from ioagent.kraken.client import KrakenClient
from ioagent.simulator.server import run_simulator
from ioagent.simulator.state import SimDevice, SimPreferences, SimulatorState, default_schedules
from ioagent.timeutil import utc_now
from ioagent.topics import Topics

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
) -> dict[str, Any]:
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

    async def poll(agent: AccountAgent) -> bool:
        async with gate:
            return (await agent.poll()).ok

    round_seconds: list[float] = []
    failures: list[int] = []
    round_cpu: list[float] = []
    try:
        for _ in range(rounds):
            started, cpu_started = time.perf_counter(), cpu_seconds()
            results = await asyncio.gather(*(poll(agent) for agent in agents))
            round_seconds.append(time.perf_counter() - started)
            round_cpu.append(cpu_seconds() - cpu_started)
            failures.append(sum(1 for ok in results if not ok))
        rss_after = rss_kb()
        traced = tracemalloc.get_traced_memory()[0] if trace else None
    finally:
        if trace:
            tracemalloc.stop()
        for agent in agents:
            await agent.client.close()
        await bridge.shutdown()
        bridge_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bridge_task
    return {
        "accounts": accounts,
        "concurrency": concurrency,
        "round_seconds": [round(s, 3) for s in round_seconds],
        "agent_cpu_seconds": [round(s, 2) for s in round_cpu],
        "failures": failures,
        "planned_slots_seen": sum(len(a.plan) for a in agents),
        "rss_delta_kb_per_account": round((rss_after - rss_before) / accounts, 1),
        "rss_before_mb": round(rss_before / 1024, 1),
        "rss_after_mb": round(rss_after / 1024, 1),
        "traced_kb_per_account": None if traced is None else round(traced / 1024 / accounts, 1),
    }


@contextlib.contextmanager
def simulator_process(accounts: int) -> Iterator[str]:
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
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def worker(
    accounts: int, sim_url: str, mqtt_host: str, mqtt_port: int, trace: bool
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
    ]
    if trace:
        command.append("--tracemalloc")
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def many_accounts(sizes: list[int], mqtt_host: str, mqtt_port: int) -> dict[str, Any]:
    """A fresh simulator and worker process per size; tracemalloc in a separate run."""
    runs = []
    for size in sizes:
        with simulator_process(size) as url:
            timed = worker(size, url, mqtt_host, mqtt_port, trace=False)
        with simulator_process(size) as url:
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
    args = parser.parse_args()
    quiet_logs()
    if args.command == "serve":
        asyncio.run(serve(args.accounts))
        return
    result = asyncio.run(
        run_agents(args.accounts, args.sim, args.mqtt_host, args.mqtt_port, trace=args.tracemalloc)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
