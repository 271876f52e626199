"""``ioagent dispatches`` prints the product, the car allowance and the rates (simulator)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import DEFAULT_API_KEY, SimulatorState
from tests.clocks import suite_now

REPO = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, sim: RunningSimulator) -> Path:
    path = tmp_path / "ioagent.toml"
    path.write_text(
        f'[octopus]\napi_key = "{DEFAULT_API_KEY}"\napi_url = "{sim.graphql_url}"\n'
        f'rest_url = "{sim.rest_url}"\nread_timeout = 5\n',
        encoding="utf-8",
    )
    return path


async def dispatches(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOAGENT_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ioagent", "dispatches", *args,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_four_rate_account_shows_allowance_and_rates(tmp_path: Path) -> None:
    state = SimulatorState.with_default_account(clock=suite_now, product="four_rate")
    async with run_simulator(state) as sim:
        config = write_config(tmp_path, sim)
        code, out, err = await dispatches("--config", str(config))
        assert code == 0, err
        assert "Tariff: IOG-SMB-VAR-24-10-29 (E-1R-IOG-SMB-VAR-24-10-29-H), rules: four_rate" in out
        assert "allowance: 6.00 h left of 6 h" in out
        assert "car 27.4785p" in out
        code, out, err = await dispatches("--config", str(config), "--json")
        assert code == 0, err
        tariff = json.loads(out)["tariff"]
        assert tariff["family"] == "four_rate" and tariff["allowance"]["remaining"] == 6.0
        assert tariff["rate_ev"] == 27.4785


async def test_legacy_account_has_no_allowance(tmp_path: Path, simulator: RunningSimulator) -> None:
    code, out, err = await dispatches("--config", str(write_config(tmp_path, simulator)))
    assert code == 0, err
    assert "rules: legacy" in out
    assert "allowance:" not in out
    assert "home 27.5p" in out or "home 7p" in out
