"""``ioagent check``: validate the config, reach the broker(s), log in to Octopus, list devices.

Prints one line per check, ``✔`` or ``✘`` (``[ok]``/``[FAIL]`` when the terminal cannot show
them), with a hint under every failure. Every check runs even after one fails, so one run names
everything that needs fixing; the checks that need an account are skipped when login fails.

Exit codes, for scripts (when several checks fail, the first in this list wins):

* 0 — everything works;
* 2 — the configuration is invalid (the message names the file and the key);
* 3 — the MQTT broker is unreachable or refused the connection or the login;
* 4 — the Octopus API refused the key, could not be reached, or the account or its devices
  could not be read;
* 5 — the Victron GX broker is unreachable or refused the login (only with ``[victron]
  enabled``).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

import aiomqtt

from ioagent.config import (
    ConfigError,
    MqttSettings,
    Settings,
    TlsSettings,
    VictronSettings,
    ignored_environment,
    load_settings,
    resolve_config_path,
)
from ioagent.kraken.cli import failure_message
from ioagent.kraken.client import KrakenClient
from ioagent.kraken.errors import AccountError, AuthFailed, KrakenError, TransientError
from ioagent.kraken.types import Device
from ioagent.logs import configure_logging, redact, register_secret
from ioagent.mqtt.bridge import describe_connection_error

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_MQTT = 3
EXIT_OCTOPUS = 4
EXIT_GX = 5

MQTT_TIMEOUT = 5.0
"""Seconds to wait for a broker's CONNACK; a check should answer quickly."""
API_CONNECT_TIMEOUT = 10.0
API_READ_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One printed line: what was checked, whether it worked, and what to do if not."""

    name: str
    ok: bool
    detail: str
    exit_code: int = EXIT_OK
    """The exit code this failure maps to; unused when ``ok``."""
    hint: str | None = None
    items: tuple[str, ...] = field(default=())
    """Extra lines printed under the result (e.g. one per device)."""


@dataclass(frozen=True, slots=True)
class Marks:
    ok: str
    failed: str


UNICODE_MARKS = Marks(ok="✔", failed="✘")
ASCII_MARKS = Marks(ok="[ok]", failed="[FAIL]")


def marks_for(encoding: str | None) -> Marks:
    """✔/✘ when ``encoding`` can write them, else plain ASCII."""
    try:
        (UNICODE_MARKS.ok + UNICODE_MARKS.failed).encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ASCII_MARKS
    return UNICODE_MARKS


def render(result: CheckResult, marks: Marks) -> list[str]:
    """The lines printed for one result."""
    mark = marks.ok if result.ok else marks.failed
    first, *rest = result.detail.splitlines() or [""]
    lines = [f"{mark} {result.name}: {first}"]
    lines += [f"    {line}" for line in rest]
    lines += [f"    {item}" for item in result.items]
    if not result.ok and result.hint:
        lines.append(f"    hint: {result.hint}")
    return lines


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 when every check passed, else the lowest failure code (config before broker...)."""
    return min((r.exit_code for r in results if not r.ok), default=EXIT_OK)


def mqtt_hint(message: str, section: str) -> str:
    """What to try for a broker failure described by :func:`describe_connection_error`."""
    lowered = message.lower()
    if "login" in lowered:
        return f"check [{section}] username and password"
    if "client id" in lowered:
        return f"set [{section}] client_id to a plain name"
    if "tls" in lowered:
        return f"check [{section}.tls] (CA file, certificate) and that the port speaks TLS"
    if "resolve" in lowered:
        return f"check [{section}] host; in docker compose it is the service name, e.g. mosquitto"
    if "connection refused" in lowered or "did not answer" in lowered:
        return f"is the broker running, and are [{section}] host and port right?"
    return f"check [{section}] host, port and credentials"


def octopus_hint(exc: Exception) -> str:
    if isinstance(exc, AuthFailed):
        return (
            "copy the key again from Octopus: Personal details > API access, "
            "and set [octopus] api_key (or IOAGENT_OCTOPUS__API_KEY_FILE)"
        )
    if isinstance(exc, AccountError):
        return "set [octopus] account_number to an account this key can see"
    if isinstance(exc, TransientError):
        return "check the network and DNS, and [octopus] api_url; try again in a minute"
    return (
        "check [octopus] api_url (leave it out for the live API); if it is right, run "
        "'ioagent dispatches' with [logging] level = \"debug\" for details"
    )


def describe_device(device: Device) -> str:
    name = " ".join(part for part in (device.make, device.model) if part) or "unnamed device"
    state = ", ".join(part for part in (device.status_current, device.current_state) if part)
    suspended = " (smart control suspended)" if device.is_suspended else ""
    kind = device.device_type or "type unknown"
    smart = "" if device.is_smart_chargeable else f" (not smart-charged: {kind})"
    return f"{name} [{device.id}]: {state or 'state unknown'}{suspended}{smart}"


# --- the checks (I/O) ------------------------------------------------------------------------


def _mqtt_client(
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    tls: TlsSettings,
    protocol: aiomqtt.ProtocolVersion,
) -> aiomqtt.Client:
    tls_params = None
    if tls.enabled:
        tls_params = aiomqtt.TLSParameters(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.certfile) if tls.certfile else None,
            keyfile=str(tls.keyfile) if tls.keyfile else None,
        )
    return aiomqtt.Client(
        host,
        port,
        username=username,
        password=password,
        # Never the daemon's id: the broker would disconnect a running ioagent.
        identifier=f"ioagent-check-{secrets.token_hex(4)}",
        protocol=protocol,
        timeout=MQTT_TIMEOUT,
        tls_params=tls_params,
        tls_insecure=tls.insecure if tls.enabled else None,
    )


async def _connect_once(client: aiomqtt.Client) -> None:
    async with client:
        pass


async def check_broker(
    name: str,
    section: str,
    settings: MqttSettings | VictronSettings,
    *,
    failure_code: int,
    protocol: aiomqtt.ProtocolVersion,
) -> CheckResult:
    password = settings.password.get_secret_value() if settings.password else None
    where = f"{settings.host}:{settings.port}"
    try:
        client = _mqtt_client(
            settings.host, settings.port, settings.username, password, settings.tls, protocol
        )
        # The outer limit also covers a TCP connect that hangs on an unreachable host.
        async with asyncio.timeout(MQTT_TIMEOUT * 2):
            await _connect_once(client)
    except Exception as exc:
        # Anything at all (a bad CA file, a refused login, a dead host) is a failed check.
        message = redact(describe_connection_error(exc, settings.host, settings.port))
        return CheckResult(
            name, False, message, exit_code=failure_code, hint=mqtt_hint(message, section)
        )
    user = f" as {settings.username}" if settings.username else " without a login"
    return CheckResult(name, True, f"connected to {where}{user}")


async def check_octopus(settings: Settings) -> list[CheckResult]:
    octopus = settings.octopus
    results: list[CheckResult] = []
    async with KrakenClient(
        octopus.api_url,
        octopus.api_key,
        connect_timeout=min(octopus.connect_timeout, API_CONNECT_TIMEOUT),
        read_timeout=min(octopus.read_timeout, API_READ_TIMEOUT),
    ) as client:
        step = "Octopus API login"
        try:
            await client.login()
            results.append(CheckResult(step, True, f"API key accepted by {octopus.api_url}"))
            step = "Octopus account"
            account = await client.discover_account(octopus.account_number)
            how = "as configured" if octopus.account_number else "discovered from the key"
            results.append(CheckResult(step, True, f"{account} ({how})"))
            step = "devices"
            devices = await client.devices(account)
        except Exception as exc:
            # A check reports every failure as a line; a traceback would hide the others.
            if isinstance(exc, KrakenError):
                _, message = failure_message(exc, octopus.api_url)
            else:
                message = f"unexpected error: {type(exc).__name__}: {exc}"
            results.append(
                CheckResult(
                    step,
                    False,
                    redact(message),
                    exit_code=EXIT_OCTOPUS,
                    hint=octopus_hint(exc),
                )
            )
            return results
    if not devices:
        results.append(
            CheckResult(
                "devices",
                False,
                f"Octopus lists no smart-charging device on account {account}",
                exit_code=EXIT_OCTOPUS,
                hint="finish the Intelligent Octopus set-up of your car or charger in the app",
            )
        )
    else:
        count = f"{len(devices)} device{'s' if len(devices) != 1 else ''}"
        items = tuple(describe_device(device) for device in devices)
        results.append(CheckResult("devices", True, count, items=items))
    return results


async def run_checks(settings: Settings) -> list[CheckResult]:
    """Every check after the config, run side by side, in a fixed print order."""
    main = check_broker(
        "MQTT broker",
        "mqtt",
        settings.mqtt,
        failure_code=EXIT_MQTT,
        protocol=aiomqtt.ProtocolVersion.V5,
    )
    api = check_octopus(settings)
    if settings.victron.enabled:
        gx = check_broker(
            "Victron GX broker",
            "victron",
            settings.victron,
            failure_code=EXIT_GX,
            # The GX's broker is driven over 3.1.1, as ioagent.victron.connector does.
            protocol=aiomqtt.ProtocolVersion.V311,
        )
        broker, octopus, victron = await asyncio.gather(main, api, gx)
        return [broker, victron, *octopus]
    broker, octopus = await asyncio.gather(main, api)
    return [broker, *octopus]


def _register_secrets(settings: Settings) -> None:
    register_secret(settings.octopus.api_key.get_secret_value())
    for password in (settings.mqtt.password, settings.victron.password):
        if password is not None:
            register_secret(password.get_secret_value())


def _print(lines: Sequence[str], out: TextIO) -> None:
    for line in lines:
        print(redact(line), file=out)


def cli_check(args: argparse.Namespace) -> int:
    """Run every check and print the results; returns an exit code (see the module docstring)."""
    out = sys.stdout
    marks = marks_for(getattr(out, "encoding", None))
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        result = CheckResult(
            "config",
            False,
            str(exc),
            exit_code=EXIT_CONFIG,
            hint=exc.hint,
        )
        _print(render(result, marks), out)
        return EXIT_CONFIG
    _register_secrets(settings)
    # Library log lines would interleave with the report; keep only real trouble, on stderr.
    configure_logging("error", "console", stream=sys.stderr)
    path = resolve_config_path(args.config)
    source = str(path) if path is not None else "the environment"
    warnings = tuple(f"warning: {text}" for text in ignored_environment())
    results = [CheckResult("config", True, f"{source} is valid", items=warnings)]
    results += asyncio.run(run_checks(settings))
    for result in results:
        _print(render(result, marks), out)
    code = exit_code(results)
    _print(["all checks passed" if code == EXIT_OK else f"exit code {code}"], out)
    return code


__all__ = [
    "CheckResult",
    "cli_check",
    "exit_code",
    "marks_for",
    "mqtt_hint",
    "render",
    "run_checks",
]
