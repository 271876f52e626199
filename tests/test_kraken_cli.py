"""``ioagent dispatches`` end to end: a real subprocess against the simulator in this test, or
against ``ioagent simulator`` as a second real process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from ioagent.kraken.cli import _describe_preferences
from ioagent.kraken.types import DAYS_OF_WEEK, Preferences, parse_preferences
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_CHARGER_ID,
    DEFAULT_EV_ID,
    MIXED_API_KEY,
    MIXED_LIVE_EV_ID,
    SECOND_ACCOUNT,
)
from tests.clocks import suite_now

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


async def control(sim: RunningSimulator, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            "GET" if body is None else "POST", f"{sim.control_url}/{path}", json=body
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


def write_config(
    tmp_path: Path, api_url: str, api_key: str = DEFAULT_API_KEY, account: str | None = None
) -> Path:
    path = tmp_path / "ioagent.toml"
    chosen = f'account_number = "{account}"\n' if account else ""
    # The rates come from the same server's REST API: never from Octopus's own.
    rest_url = api_url.split("/v1/")[0]
    path.write_text(
        f'[octopus]\napi_key = "{api_key}"\napi_url = "{api_url}"\nrest_url = "{rest_url}"\n'
        f"read_timeout = 5\n{chosen}",
        encoding="utf-8",
    )
    return path


async def run_cli(*args: str) -> Run:
    """Run ``python -m ioagent dispatches`` without blocking the simulator's event loop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOAGENT_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ioagent",
        "dispatches",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


@dataclass
class StandaloneSimulator:
    banner: str

    def line(self, label: str) -> str:
        return next(line for line in self.banner.splitlines() if line.strip().startswith(label))

    @property
    def control_url(self) -> str:
        return self.line("Control API:").split()[2]

    def config_snippet(self) -> str:
        """The TOML the banner tells the user to save, from ``[octopus]`` to the blank line."""
        lines = self.banner.splitlines()
        start = lines.index("[octopus]")
        end = lines.index("", start)
        return "\n".join(lines[start:end]) + "\n"

    async def state(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.control_url}/state") as response,
        ):
            assert response.status == 200
            result: dict[str, Any] = await response.json()
            return result


@asynccontextmanager
async def simulator_process(*args: str) -> AsyncIterator[StandaloneSimulator]:
    """``python -m ioagent simulator`` on a port the OS picks, stopped with SIGTERM afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOAGENT_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "ioagent", "simulator", "--port", "0", *args),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        lines: list[str] = []
        async with asyncio.timeout(30):
            while not lines or not lines[-1].rstrip().endswith("Ctrl-C stops."):
                line = await process.stdout.readline()
                assert line, "simulator exited early:\n" + "".join(lines)
                lines.append(line.decode())
        yield StandaloneSimulator("".join(lines))
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


def _london(iso: str) -> str:
    local = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZoneInfo("Europe/London"))
    return local.strftime("%a %d %b %H:%M" + (":%S" if local.second else ""))


async def test_standalone_simulator_and_dispatches_print_a_plan(tmp_path: Path) -> None:
    async with simulator_process() as sim:
        config = write_config(tmp_path, sim.line("GraphQL URL:").split()[2])
        table = await run_cli("--config", str(config))
        as_json = await run_cli("--config", str(config), "--json")
        [ev] = [d for d in (await sim.state())["devices"] if d["id"] == DEFAULT_EV_ID]

        assert table.code == 0, table.stderr
        assert ev["planned"], "the standalone simulator should start with a plan"
        lines = table.stdout.splitlines()
        first = lines.index("  planned dispatches:") + 1
        assert lines[first].split() == ["start", "end", "type", "kWh"]
        rows = lines[first + 1 : first + 1 + len(ev["planned"])]
        for row, planned in zip(rows, ev["planned"], strict=True):
            start, end = _london(planned["start"]), _london(planned["end"])
            assert row.strip().startswith(start), (row, start)
            assert f"  {end}  SMART  " in row, (row, end)
            assert float(row.split()[-1]) == pytest.approx(planned["kwh"], abs=0.005)

        assert as_json.code == 0, as_json.stderr
        [device] = json.loads(as_json.stdout)["devices"]
        assert device["planned"], "planned list should not be empty"
        assert [(p["start"], p["end"], p["type"]) for p in device["planned"]] == [
            (p["start"], p["end"], p["type"]) for p in ev["planned"]
        ]

        # The banner says what the simulator holds and prints a config that works as it is.
        assert sim.line("EV:").endswith(
            f"plugged in at 30 %, planned dispatches: {len(ev['planned'])}"
        )
        snippet = tmp_path / "sim.toml"
        snippet.write_text(sim.config_snippet(), encoding="utf-8")
        from_snippet = await run_cli("--config", str(snippet), "--json")
        assert from_snippet.code == 0, from_snippet.stderr
        assert json.loads(from_snippet.stdout)["devices"] == [device]


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


async def test_standalone_simulator_unplugged_with_a_short_jwt_lifetime(tmp_path: Path) -> None:
    async with simulator_process("--unplugged", "--jwt-lifetime", "120") as sim:
        assert sim.line("EV:").split(maxsplit=1)[1].startswith("unplugged")
        assert sim.line("JWT lifetime:").split()[2:] == ["120", "s"]
        url = sim.line("GraphQL URL:").split()[2]
        login = "mutation($k: String) { obtainKrakenToken(input: {APIKey: $k}) { token } }"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json={"query": login, "variables": {"k": DEFAULT_API_KEY}}) as resp,
        ):
            token = (await resp.json())["data"]["obtainKrakenToken"]["token"]
        config = tmp_path / "sim.toml"
        config.write_text(sim.config_snippet(), encoding="utf-8")
        run = await run_cli("--config", str(config))
    claims = _claims(token)
    assert claims["exp"] - claims["iat"] == 120
    assert run.code == 0, run.stderr
    assert "  planned dispatches: none" in run.stdout.splitlines()


async def _plugged_in_with_history(simulator: RunningSimulator) -> dict[str, Any]:
    await control(simulator, "plug", {"device_id": DEFAULT_EV_ID, "plugged": True})
    end = suite_now().replace(second=0, microsecond=0) - timedelta(hours=1)
    await control(
        simulator,
        "completed",
        {
            "account": DEFAULT_ACCOUNT,
            "start": (end - timedelta(minutes=45)).isoformat(),
            "end": end.isoformat(),
            "kwh": 4.25,
            "source": "smart-charge",
            "location": "AT_HOME",
        },
    )
    state = await control(simulator, "state")
    device: dict[str, Any] = next(d for d in state["devices"] if d["id"] == DEFAULT_EV_ID)
    assert device["planned"], "plugging in should make a plan"
    return device


async def test_prints_the_plan_as_a_table(simulator: RunningSimulator, tmp_path: Path) -> None:
    device = await _plugged_in_with_history(simulator)
    run = await run_cli("--config", str(write_config(tmp_path, simulator.graphql_url)))
    assert run.code == 0, run.stderr
    out = run.stdout
    assert f"Account {DEFAULT_ACCOUNT}" in out
    assert f"Tesla Model 3 [{DEFAULT_EV_ID}]" in out
    assert "LIVE, SMART_CONTROL_CAPABLE, suspended: no" in out
    assert "target 80% by 07:30 every day (CHARGE, 6-hour cap ENABLED)" in out
    smart_rows = [line for line in out.splitlines() if "  SMART  " in line]
    # One row per planned slot, plus the completed smart charge (4.25 kWh, at home).
    assert len(smart_rows) == len(device["planned"]) + 1
    assert smart_rows[-1].split()[-2:] == ["AT_HOME", "4.25"]
    assert DEFAULT_API_KEY not in out + run.stderr


async def test_prints_json_with_utc_times(simulator: RunningSimulator, tmp_path: Path) -> None:
    device = await _plugged_in_with_history(simulator)
    run = await run_cli("--config", str(write_config(tmp_path, simulator.graphql_url)), "--json")
    assert run.code == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["account"] == DEFAULT_ACCOUNT
    assert report["errors"] == {}
    [ev] = report["devices"]
    assert ev["id"] == DEFAULT_EV_ID
    assert ev["status"] == {
        "current": "LIVE",
        "current_state": "SMART_CONTROL_CAPABLE",
        "is_suspended": False,
    }
    assert [(s["time"], s["max"]) for s in ev["preferences"]["schedules"]] == [("07:30", 80.0)] * 7
    assert [(p["start"], p["end"], p["type"]) for p in ev["planned"]] == [
        (p["start"], p["end"], p["type"]) for p in device["planned"]
    ]
    assert all(p["start"].endswith("Z") and p["end"].endswith("Z") for p in ev["planned"])
    [completed] = report["completed"]
    assert (completed["kwh"], completed["type"], completed["location"]) == (
        4.25,
        "SMART",
        "AT_HOME",
    )
    assert completed["end"].endswith("Z")


async def test_partial_failure_is_shown(simulator: RunningSimulator, tmp_path: Path) -> None:
    await control(simulator, "faults", {"kind": "kt_4340", "count": 1})
    run = await run_cli("--config", str(write_config(tmp_path, simulator.graphql_url)))
    assert run.code == 0, run.stderr
    assert "planned dispatches: could not be read" in run.stdout
    assert "KT-CT-4340" in run.stdout
    assert "preferences: target 80% by 07:30" in run.stdout


async def test_key_with_several_accounts_exits_2_listing_them(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    await control(simulator, "accounts", {"number": SECOND_ACCOUNT, "api_key": DEFAULT_API_KEY})
    run = await run_cli("--config", str(write_config(tmp_path, simulator.graphql_url)))
    assert run.code == 2
    assert run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        f"ioagent dispatches: this API key sees several accounts ({DEFAULT_ACCOUNT}, "
        f"{SECOND_ACCOUNT}); set octopus.account_number"
    ]
    chosen = write_config(tmp_path, simulator.graphql_url, account=SECOND_ACCOUNT)
    run = await run_cli("--config", str(chosen), "--json")
    assert run.code == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["account"] == SECOND_ACCOUNT
    assert [d["id"] for d in report["devices"]] == [DEFAULT_CHARGER_ID]


async def test_bad_key_exits_1_with_one_clear_line(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    bad_key = "sk_live_FAKEdefinitelyWrongKey001"
    run = await run_cli("--config", str(write_config(tmp_path, simulator.graphql_url, bad_key)))
    assert run.code == 1
    assert run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "ioagent dispatches: Octopus refused the API key; check octopus.api_key [KT-CT-1139]:"
        " Authentication failed."
    ]
    assert bad_key not in run.stderr


async def test_unreachable_api_exits_1(tmp_path: Path) -> None:
    run = await run_cli("--config", str(write_config(tmp_path, "http://127.0.0.1:9/v1/graphql/")))
    assert run.code == 1
    [line] = run.stderr.strip().splitlines()
    assert "cannot get an answer from the Kraken API at http://127.0.0.1:9/v1/graphql/" in line


async def test_config_error_exits_2(tmp_path: Path) -> None:
    run = await run_cli("--config", str(tmp_path / "missing.toml"))
    assert run.code == 2
    assert "missing.toml does not exist" in run.stderr


def _preferences(*days: tuple[str, str, float | None]) -> Preferences:
    return parse_preferences(
        {
            "mode": "CHARGE",
            "isChargingDurationCapped": "ENABLED",
            "schedules": [{"dayOfWeek": d, "time": t, "max": m} for d, t, m in days],
        }
    )


@pytest.mark.parametrize(
    ("preferences", "expected"),
    [
        pytest.param(None, "none", id="no-preferences"),
        pytest.param(_preferences(), "none", id="no-schedules"),
        pytest.param(
            _preferences(*((day, "07:30:00", 80) for day in DAYS_OF_WEEK)),
            "target 80% by 07:30 every day (CHARGE, 6-hour cap ENABLED)",
            id="same-every-day",
        ),
        pytest.param(
            _preferences(
                *((day, "07:30:00", 80) for day in DAYS_OF_WEEK[:6]), ("SUNDAY", "09:00", 80)
            ),
            "Mon 80% by 07:30, Tue 80% by 07:30, Wed 80% by 07:30, Thu 80% by 07:30, "
            "Fri 80% by 07:30, Sat 80% by 07:30, Sun 80% by 09:00 (CHARGE, 6-hour cap ENABLED)",
            id="one-day-differs",
        ),
        pytest.param(
            _preferences(("TUESDAY", "06:30", 65), ("MONDAY", "06:00", None)),
            "Mon by 06:00, Tue 65% by 06:30 (CHARGE, 6-hour cap ENABLED)",
            id="some-days-and-no-target",
        ),
    ],
)
def test_describe_preferences(preferences: Preferences | None, expected: str) -> None:
    assert _describe_preferences(preferences) == expected


async def test_a_closed_pipe_ends_quietly(simulator: RunningSimulator, tmp_path: Path) -> None:
    """`ioagent dispatches --json | head`: the reader leaves early; no BrokenPipeError trace."""
    config = write_config(tmp_path, simulator.graphql_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOAGENT_")}
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before anything is written
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ioagent",
            "dispatches",
            "--json",
            "--config",
            str(config),
            cwd=REPO,
            env=env,
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    text = stderr.decode()
    assert "Traceback" not in text and "BrokenPipeError" not in text, text
    assert text == ""
    assert process.returncode == 141  # what a shell shows for a SIGPIPE'd program


async def test_dispatches_asks_only_smart_chargeable_devices_for_a_plan(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    await control(simulator, "calls/reset", {})
    config = write_config(tmp_path, simulator.graphql_url, api_key=MIXED_API_KEY)
    run = await run_cli("--config", str(config), "--json")
    assert run.code == 0, run.stderr
    report = json.loads(run.stdout)
    flags = {d["id"]: d["smart_charged"] for d in report["devices"]}
    assert flags[MIXED_LIVE_EV_ID] is True
    assert sorted(flags.values()) == [False, False, False, True]
    calls = await control(simulator, "calls")
    assert calls["by_operation"].get("flexPlannedDispatches") == 1
    table = await run_cli("--config", str(config))
    assert table.stdout.count("not asked (no smart charging for this device)") == 3
