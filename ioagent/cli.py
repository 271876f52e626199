"""Command-line entry point: ``ioagent run|demo|simulator|dispatches|check|history|ledger``.

Each sub-command's work lives in its own module, imported only when that command runs so that
``ioagent --help`` stays fast on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date, timedelta
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
    "ledger": "ioagent.store.ledger_cli:cli_ledger",
}


EXIT_BROKEN_PIPE = 128 + 13
"""What a shell reports for a program ended by SIGPIPE, as ``head`` leaves it."""


def _jwt_lifetime(text: str) -> timedelta:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    # JWT expiry is whole Unix seconds: under one second a token would be born expired.
    if not 1 <= seconds <= 366 * 86400:
        raise argparse.ArgumentTypeError("must be from 1 second to a year")
    return timedelta(seconds=seconds)


DESCRIPTION = (
    "ioagent reads your Intelligent Octopus Go smart-charging plan from Octopus and publishes it, "
    "with off-peak signals for the home and the car by your product's rules, as MQTT topics for Home Assistant, Node-RED and "
    "Victron GX. Start with 'ioagent demo' (no account needed), then 'ioagent check' and "
    "'ioagent run' with your config file."
)
EPILOG = "Run 'ioagent COMMAND --help' for a command's options. Docs: README.md and docs/."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ioagent", description=DESCRIPTION, epilog=EPILOG)
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

    with_config(
        sub.add_parser(
            "run",
            help="run the daemon",
            description="Run the daemon: poll Octopus, publish the MQTT topics and obey "
            "commands until stopped (Ctrl-C or SIGTERM).",
        )
    )
    demo = sub.add_parser(
        "demo",
        help="run the daemon against the built-in simulator",
        description="Try ioagent without an Octopus account: the daemon against the built-in "
        "Kraken simulator, publishing to a local broker (a private Mosquitto is started when "
        "none answers, or when the one there needs a login).",
    )
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
    sim = sub.add_parser(
        "simulator",
        help="run the Kraken API simulator standalone",
        description="Run ioagent's Kraken API simulator on its own, for trying the other "
        "commands without an Octopus account; it prints a config to use with it.",
    )
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
        sub.add_parser(
            "dispatches",
            help="print the plan, device state and preferences once",
            description="Log in to Octopus once and print the planned and completed "
            "dispatches, the device's state and its charging preferences.",
        )
    )
    dispatches.add_argument("--json", action="store_true", help="print JSON instead of a table")
    with_config(
        sub.add_parser(
            "check",
            help="validate config, broker(s) and API login",
            description="Check the config file, the MQTT broker login, the Octopus API login, "
            "the account and its devices; one line each, exit code 0 when all is well.",
        )
    )
    history = with_config(
        sub.add_parser(
            "history",
            help="per-night off-peak history",
            description="Off-peak hours and charged energy per night, from the daemon's "
            "database (only nights the daemon saw).",
        )
    )
    history.add_argument("--days", type=int, default=14, help="nights to show (default 14)")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ledger = with_config(sub.add_parser("ledger", help="settled billing and signal agreement"))
    ledger.add_argument("--days", type=int, default=7, help="days to show (default 7)")
    ledger.add_argument(
        "--day", type=_iso_day, default=None, metavar="YYYY-MM-DD",
        help="that day's half-hours: the signal against the bill",
    )  # fmt: skip
    ledger.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _iso_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, function_name = HANDLERS[args.command].split(":")
    handler = cast(
        Callable[[argparse.Namespace], int],
        getattr(importlib.import_module(module_name), function_name),
    )
    try:
        code = handler(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here, not at exit
    except BrokenPipeError:
        # `ioagent dispatches --json | head`: the reader has gone, which is no error of ours.
        # Point stdout at /dev/null so that the interpreter's final flush stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
