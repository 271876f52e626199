"""Command-line entry point: ``ioagent run|demo|simulator|dispatches|check|history``.

Each sub-command's work lives in its own module, imported only when that command runs so that
``ioagent --help`` stays fast on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import cast

from ioagent import __version__

# command name -> "module:function"; the function takes the parsed namespace and returns an
# exit code.
HANDLERS = {
    "run": "ioagent.runtime.daemon:cli_run",
    "demo": "ioagent.demo:cli_demo",
    "simulator": "ioagent.simulator.cli:cli_simulator",
    "dispatches": "ioagent.dispatches:cli_dispatches",
    "check": "ioagent.check:cli_check",
    "history": "ioagent.store.history:cli_history",
}


def _jwt_lifetime(text: str) -> timedelta:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    # JWT expiry is whole Unix seconds: under one second a token would be born expired.
    if not 1 <= seconds <= 366 * 86400:
        raise argparse.ArgumentTypeError("must be from 1 second to a year")
    return timedelta(seconds=seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ioagent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ioagent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            "-c",
            metavar="PATH",
            default=None,
            help="TOML config file (default: $IOAGENT_CONFIG, else environment only)",
        )
        return p

    with_config(sub.add_parser("run", help="run the daemon"))
    demo = sub.add_parser("demo", help="run the daemon against the built-in simulator")
    demo.add_argument("--mqtt-host", default="localhost", help="broker host (default localhost)")
    demo.add_argument("--mqtt-port", type=int, default=1883, help="broker port (default 1883)")
    demo.add_argument("--base-topic", default="ioagent", help="topic prefix (default ioagent)")
    demo.add_argument(
        "--product",
        choices=("four_rate", "legacy"),
        default="four_rate",
        help="the simulated account's product (default four_rate)",
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: never)"
    )
    sim = sub.add_parser("simulator", help="run the Kraken API simulator standalone")
    sim.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=8765, help="listen port (default 8765)")
    sim.add_argument(
        "--unplugged",
        action="store_true",
        help="start with the car unplugged and no plan (default: plugged in, with a plan)",
    )
    sim.add_argument(
        "--jwt-lifetime",
        metavar="SECONDS",
        type=_jwt_lifetime,
        default=None,
        help="how long the simulator's JWTs live (default 3600, as Kraken's)",
    )
    sim.add_argument(
        "--product",
        choices=("legacy", "four_rate"),
        default="legacy",
        help="the accounts' Intelligent Octopus Go product (default legacy; migrate one later "
        "with POST /control/agreements)",
    )
    dispatches = with_config(
        sub.add_parser("dispatches", help="print the plan, device state and preferences once")
    )
    dispatches.add_argument("--json", action="store_true", help="print JSON instead of a table")
    with_config(sub.add_parser("check", help="validate config, broker(s) and API login"))
    history = with_config(sub.add_parser("history", help="per-night off-peak history"))
    history.add_argument("--days", type=int, default=14, help="nights to show (default 14)")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, function_name = HANDLERS[args.command].split(":")
    handler = cast(
        Callable[[argparse.Namespace], int],
        getattr(importlib.import_module(module_name), function_name),
    )
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
