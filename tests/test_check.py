"""``ioagent check``: pure helpers, and the real CLI as a subprocess against the simulator and a
real Mosquitto."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ioagent.check import (
    ASCII_MARKS,
    EXIT_CONFIG,
    EXIT_GX,
    EXIT_MQTT,
    EXIT_OCTOPUS,
    EXIT_OK,
    UNICODE_MARKS,
    CheckResult,
    exit_code,
    marks_for,
    mqtt_hint,
    render,
)
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_API_KEY, DEFAULT_EV_ID
from tests.broker import Broker, free_port
from tests.canary import secret

REPO = Path(__file__).resolve().parent.parent
MQTT_USER = "ioagent"
MQTT_PASSWORD = secret("check-horse-battery-staple")

# --- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("utf-8", UNICODE_MARKS),
        ("UTF-8", UNICODE_MARKS),
        ("ascii", ASCII_MARKS),
        ("latin-1", ASCII_MARKS),
        ("cp1252", ASCII_MARKS),
        (None, ASCII_MARKS),
        ("no-such-codec", ASCII_MARKS),
    ],
)
def test_marks_fall_back_to_ascii(encoding: str | None, expected: object) -> None:
    assert marks_for(encoding) == expected


def _failed(code: int) -> CheckResult:
    return CheckResult("x", False, "broken", exit_code=code)


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([], EXIT_OK),
        ([CheckResult("a", True, "fine"), CheckResult("b", True, "fine")], EXIT_OK),
        ([CheckResult("a", True, "fine"), _failed(EXIT_OCTOPUS)], EXIT_OCTOPUS),
        ([_failed(EXIT_GX), _failed(EXIT_OCTOPUS)], EXIT_OCTOPUS),
        ([_failed(EXIT_GX), _failed(EXIT_MQTT), _failed(EXIT_OCTOPUS)], EXIT_MQTT),
        ([_failed(EXIT_GX)], EXIT_GX),
    ],
)
def test_exit_code_is_the_first_failure_in_documented_order(
    results: list[CheckResult], expected: int
) -> None:
    assert exit_code(results) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "MQTT broker refused the login: bad user name or password",
            "check [mqtt] username and password",
        ),
        (
            "MQTT broker refused the login: not authorised (check the user name and password)",
            "check [mqtt] username and password",
        ),
        ("cannot reach the MQTT broker at h:1883: connection refused", "is the broker running"),
        ("MQTT broker at h:1883 did not answer in time", "is the broker running"),
        ("cannot resolve the MQTT broker host name 'mosquito'", "service name, e.g. mosquitto"),
        ("TLS with the MQTT broker at h:8883 failed: bad cert", "check [mqtt.tls]"),
        ("MQTT broker refused the client id (set mqtt.client_id ...)", "client_id"),
        ("MQTT connection to h:1 failed: odd", "check [mqtt] host, port and credentials"),
    ],
)
def test_mqtt_hint_names_the_setting_to_fix(message: str, expected: str) -> None:
    assert expected in mqtt_hint(message, "mqtt")


def test_render_shows_hint_only_for_failures_and_indents_extra_lines() -> None:
    ok = CheckResult("devices", True, "1 device", hint="unused", items=("Tesla Model 3 [x]",))
    assert render(ok, UNICODE_MARKS) == ["✔ devices: 1 device", "    Tesla Model 3 [x]"]
    failed = CheckResult("config", False, "bad\n  - a.b: wrong", exit_code=2, hint="fix it")
    assert render(failed, ASCII_MARKS) == [
        "[FAIL] config: bad",
        "      - a.b: wrong",
        "    hint: fix it",
    ]


# --- the CLI ---------------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def run_check(config: Path, env: dict[str, str] | None = None) -> Run:
    """``python -m ioagent check`` without blocking the simulator's event loop."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("IOAGENT_")}
    base["PYTHONIOENCODING"] = "utf-8"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ioagent",
        "check",
        "--config",
        str(config),
        cwd=REPO,
        env=base | (env or {}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


def write_config(
    tmp_path: Path,
    api_url: str,
    mqtt_port: int,
    *,
    api_key: str | None = DEFAULT_API_KEY,
    password: str = MQTT_PASSWORD,
    extra: str = "",
) -> Path:
    key_line = f'api_key = "{api_key}"\n' if api_key is not None else ""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[octopus]\n{key_line}api_url = "{api_url}"\nread_timeout = 5\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
        f'username = "{MQTT_USER}"\npassword = "{password}"\n{extra}',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def secured_broker(broker: Broker, tmp_path: Path) -> Broker:
    """The broker fixture, restarted with a password file that knows ioagent's login."""
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), MQTT_USER, MQTT_PASSWORD],
        check=True,
        capture_output=True,
    )
    broker.extra_config = ["allow_anonymous false", f"password_file {passwords}"]
    if os.geteuid() == 0:
        # As root, mosquitto drops to user "mosquitto", who cannot read pytest's private tmp dir.
        broker.extra_config.append("user root")
    broker.restart()
    return broker


def assert_no_secrets(run: Run, *secrets: str) -> None:
    for value in (DEFAULT_API_KEY, MQTT_PASSWORD, *secrets):
        assert value not in run.output


async def test_all_checks_pass_and_list_the_device(
    simulator: RunningSimulator, secured_broker: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, simulator.graphql_url, secured_broker.port)
    run = await run_check(config)
    assert run.code == EXIT_OK, run.output
    lines = run.stdout.splitlines()
    assert lines[0] == f"✔ config: {config} is valid"
    assert f"✔ MQTT broker: connected to 127.0.0.1:{secured_broker.port} as ioagent" in lines
    assert f"✔ Octopus account: {DEFAULT_ACCOUNT} (discovered from the key)" in lines
    assert "✔ devices: 1 device" in lines
    assert f"    Tesla Model 3 [{DEFAULT_EV_ID}]: LIVE, SMART_CONTROL_CAPABLE" in lines
    assert lines[-1] == "all checks passed"
    assert "✘" not in run.stdout
    assert_no_secrets(run)


async def test_api_key_from_a_docker_secret_file(
    simulator: RunningSimulator, secured_broker: Broker, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "octopus_api_key").write_text(DEFAULT_API_KEY + "\n", encoding="utf-8")
    (secrets / "mqtt_password").write_text(MQTT_PASSWORD + "\n", encoding="utf-8")
    config = write_config(
        tmp_path, simulator.graphql_url, secured_broker.port, api_key=None, password="unused"
    )
    run = await run_check(
        config,
        {
            "IOAGENT_OCTOPUS__API_KEY_FILE": str(secrets / "octopus_api_key"),
            "IOAGENT_MQTT__PASSWORD_FILE": str(secrets / "mqtt_password"),
        },
    )
    assert run.code == EXIT_OK, run.output
    assert_no_secrets(run)


async def test_bad_api_key_exits_4(
    simulator: RunningSimulator, secured_broker: Broker, tmp_path: Path
) -> None:
    wrong_key = "sk_live_FAKEnotTheRightKey0123"
    config = write_config(tmp_path, simulator.graphql_url, secured_broker.port, api_key=wrong_key)
    run = await run_check(config)
    assert run.code == EXIT_OCTOPUS, run.output
    assert "✘ Octopus API login: Octopus refused the API key" in run.stdout
    assert "hint: copy the key again from Octopus" in run.stdout
    # The broker check still ran and passed; nothing after the failed login did.
    assert f"✔ MQTT broker: connected to 127.0.0.1:{secured_broker.port}" in run.stdout
    assert "devices" not in run.stdout
    assert_no_secrets(run, wrong_key)


async def test_closed_broker_port_exits_3_and_still_checks_the_api(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path, simulator.graphql_url, port)
    run = await run_check(config, {"PYTHONIOENCODING": "ascii"})
    assert run.code == EXIT_MQTT, run.output
    assert (
        f"[FAIL] MQTT broker: cannot reach the MQTT broker at 127.0.0.1:{port}: connection refused"
        in run.stdout
    )
    assert "hint: is the broker running, and are [mqtt] host and port right?" in run.stdout
    assert "[ok] devices: 1 device" in run.stdout
    assert run.stdout.isascii()
    assert_no_secrets(run)


async def test_wrong_mqtt_password_exits_3_with_a_login_hint(
    simulator: RunningSimulator, secured_broker: Broker, tmp_path: Path
) -> None:
    wrong = "not-the-password-at-all"
    config = write_config(tmp_path, simulator.graphql_url, secured_broker.port, password=wrong)
    run = await run_check(config)
    assert run.code == EXIT_MQTT, run.output
    assert "✘ MQTT broker: MQTT broker refused the login" in run.stdout
    assert "hint: check [mqtt] username and password" in run.stdout
    assert_no_secrets(run, wrong)


async def test_unreachable_gx_exits_5(
    simulator: RunningSimulator, secured_broker: Broker, tmp_path: Path
) -> None:
    gx_port = free_port()
    extra = f'[victron]\nenabled = true\nhost = "127.0.0.1"\nport = {gx_port}\n'
    config = write_config(tmp_path, simulator.graphql_url, secured_broker.port, extra=extra)
    run = await run_check(config)
    assert run.code == EXIT_GX, run.output
    assert f"✘ Victron GX broker: cannot reach the MQTT broker at 127.0.0.1:{gx_port}" in (
        run.stdout
    )
    assert "are [victron] host and port right?" in run.stdout
    assert "✔ devices: 1 device" in run.stdout


async def test_invalid_config_exits_2_naming_the_key(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    extra = "[tariff]\noffpeak_start = '25:00'\n"
    config = write_config(tmp_path, simulator.graphql_url, free_port(), extra=extra)
    run = await run_check(config)
    assert run.code == EXIT_CONFIG, run.output
    assert f"✘ config: Invalid configuration in {config}:" in run.stdout
    assert "tariff.offpeak_start" in run.stdout
    # Nothing is contacted with a config that does not load.
    assert "MQTT broker" not in run.stdout
    assert_no_secrets(run)


@pytest.mark.parametrize(
    ("toml_line", "sentence"),
    [
        ('api_key = "sk_live_your_key_here"', "octopus.api_key: is still the placeholder"),
        ('api_key = "hello"', "octopus.api_key: does not look like an Octopus API key"),
        ('account_number = "12345"', "octopus.account_number: does not look like an Octopus"),
    ],
)
async def test_check_refuses_the_placeholder_and_keys_that_are_not_octopus_shaped(
    simulator: RunningSimulator, tmp_path: Path, toml_line: str, sentence: str
) -> None:
    key = None if toml_line.startswith("api_key") else DEFAULT_API_KEY
    config = write_config(tmp_path, simulator.graphql_url, free_port(), api_key=key)
    text = config.read_text().replace("[octopus]\n", f"[octopus]\n{toml_line}\n", 1)
    config.write_text(text)
    run = await run_check(config)
    assert run.code == EXIT_CONFIG, run.output
    assert "is valid" not in run.stdout
    assert sentence in run.stdout
    assert "Value error" not in run.stdout
    assert "hint: compare with config.example.toml" in run.stdout


async def test_check_gives_a_missing_file_its_own_hint(tmp_path: Path) -> None:
    run = await run_check(tmp_path / "config.toml")
    assert run.code == EXIT_CONFIG, run.output
    assert "does not exist" in run.stdout
    assert "hint: create it from the example: cp config.example.toml" in run.stdout


async def test_check_warns_about_a_single_underscore_variable(
    simulator: RunningSimulator, secured_broker: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, simulator.graphql_url, secured_broker.port)
    run = await run_check(config, env={"IOAGENT_MQTT_PORT": "1884"})
    assert run.code == 0, run.output
    assert (
        "    warning: environment variable IOAGENT_MQTT_PORT is ignored: section and key are "
        "joined by two underscores: did you mean IOAGENT_MQTT__PORT?"
    ) in run.stdout


def test_a_device_without_smart_charging_is_described_as_such() -> None:
    from ioagent.check import describe_device
    from ioagent.kraken.types import Device

    battery = Device(
        "b1", "GIVENERGY", "BATTERIES", "SmartFlexDevice", None, None, "LIVE", None, None
    )
    retired = Device("e0", "TESLA", "ELECTRIC_VEHICLES", None, "Tesla", "S", "RETIRED", None, None)
    live = Device("e1", "BMW", "ELECTRIC_VEHICLES", None, "BMW", "i4", "LIVE", None, False)
    assert describe_device(battery) == "unnamed device [b1]: LIVE (not smart-charged: BATTERIES)"
    assert describe_device(retired).endswith("RETIRED (not smart-charged: ELECTRIC_VEHICLES)")
    assert describe_device(live) == "BMW i4 [e1]: LIVE"
