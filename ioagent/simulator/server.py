"""Run the simulator: one aiohttp app serving GraphQL at ``/v1/graphql/`` and control at
``/control``, started on a (by default free) loopback port for as long as a context lasts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from ioagent.simulator.control_api import add_control_routes, control_errors
from ioagent.simulator.graphql_api import STATE_KEY, STOPPING_KEY, handle_graphql, kraken_schema
from ioagent.simulator.ledger_control import add_ledger_routes
from ioagent.simulator.state import SimulatorState
from ioagent.simulator.tariffs import rest_handlers
from ioagent.timeutil import utc_now

GRAPHQL_PATH = "/v1/graphql/"
CONTROL_PATH = "/control"


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    state: SimulatorState
    host: str
    port: int

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def graphql_url(self) -> str:
        return self.base_url + GRAPHQL_PATH

    @property
    def rest_url(self) -> str:
        """The products REST API's base, for ``[octopus] rest_url``."""
        return self.base_url

    @property
    def control_url(self) -> str:
        return self.base_url + CONTROL_PATH


def build_app(state: SimulatorState) -> web.Application:
    kraken_schema()  # build (and cache) before the first request, so schema errors surface here
    app = web.Application(middlewares=[control_errors])
    app[STATE_KEY] = state
    app[STOPPING_KEY] = asyncio.Event()
    app.router.add_post(GRAPHQL_PATH, handle_graphql)
    app.router.add_post(GRAPHQL_PATH.rstrip("/"), handle_graphql)
    add_control_routes(app)
    add_ledger_routes(app)
    app.router.add_routes(rest_handlers(state.tariffs, state.now))
    return app


@asynccontextmanager
async def run_simulator(
    state: SimulatorState | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningSimulator]:
    """Serve ``state`` (default: the default accounts on the wall clock) until the block exits."""
    if state is None:
        state = SimulatorState.with_default_account(clock=utc_now)
    app = build_app(state)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        yield RunningSimulator(state=state, host=host, port=bound_port)
    finally:
        app[STOPPING_KEY].set()
        await runner.cleanup()
