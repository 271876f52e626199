"""``ioagent simulator``: serve the Kraken simulator with the default accounts until interrupted.

Unlike the simulator the tests and the demo start, this one plugs the car in at start (unless
``--unplugged``), so that ``ioagent dispatches`` pointed at it shows a plan straight away.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import timedelta
from typing import TextIO

from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_EV_ID,
    DEFAULT_JWT_LIFETIME,
    SimulatorState,
)
from ioagent.simulator.tariffs import SimProduct
from ioagent.timeutil import utc_now


def _ev_line(state: SimulatorState) -> str:
    ev = state.device(DEFAULT_EV_ID)
    if not ev.plugged:
        return "unplugged (plug it in with POST /control/plug)"
    return f"plugged in at {ev.soc_percent:g} %, planned dispatches: {len(ev.planned)}"


def _product_line(state: SimulatorState) -> str:
    code = state.tariffs.product_at(DEFAULT_ACCOUNT, state.now()) or "none"
    return f"{code} (migrate with POST /control/agreements)"


def banner(running: RunningSimulator) -> str:
    # The key is a published test key of the simulator, not a secret, so printing it is intended.
    lifetime = running.state.jwt_lifetime.total_seconds()
    return "\n".join(
        [
            "Kraken simulator running.",
            f"  GraphQL URL:    {running.graphql_url}",
            f"  Control API:    {running.control_url}  (see docs/simulator.md)",
            f"  API key:        {DEFAULT_API_KEY}",
            f"  Account number: {DEFAULT_ACCOUNT}",
            f"  EV device id:   {DEFAULT_EV_ID}",
            f"  EV:             {_ev_line(running.state)}",
            f"  JWT lifetime:   {lifetime:g} s",
            f"  Product:        {_product_line(running.state)}",
            "",
            "ioagent config for it (save as sim.toml, then: ioagent dispatches --config sim.toml):",
            "",
            "[octopus]",
            f'api_url = "{running.graphql_url}"',
            f'rest_url = "{running.rest_url}"',
            f'api_key = "{DEFAULT_API_KEY}"',
            "",
            "Ctrl-C stops.",
        ]
    )


async def serve(
    host: str,
    port: int,
    out: TextIO,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    *,
    plugged: bool = True,
    jwt_lifetime: timedelta = DEFAULT_JWT_LIFETIME,
    product: SimProduct = "legacy",
) -> None:
    """Serve until ``stop`` is set, or until SIGINT/SIGTERM; ``ready`` is set once listening."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):
            pass  # not the main thread, or Windows: Ctrl-C still raises KeyboardInterrupt
    try:
        state = SimulatorState.with_default_account(
            clock=utc_now, jwt_lifetime=jwt_lifetime, product=product
        )
        if plugged:
            state.plug(state.device(DEFAULT_EV_ID), True)
        async with run_simulator(state, host=host, port=port) as running:
            print(banner(running), file=out, flush=True)
            if ready is not None:
                ready.set()
            await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    print("Kraken simulator stopped.", file=out, flush=True)


def cli_simulator(args: argparse.Namespace) -> int:
    try:
        asyncio.run(
            serve(
                args.host,
                args.port,
                sys.stdout,
                plugged=not args.unplugged,
                jwt_lifetime=args.jwt_lifetime or DEFAULT_JWT_LIFETIME,
                product=getattr(args, "product", "legacy"),
            )
        )
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(
            f"ioagent simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0
