"""``ioagent ledger``: the day table and one day's half-hours, from a real database file."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ioagent.cli import main
from ioagent.ledger.parse import Bucket, SettledHalfHour
from ioagent.ledger.reconcile import in_fixed_window
from ioagent.ledger.windows import local_day_bounds
from ioagent.store.database import Store
from ioagent.store.ledger import CAR_SIGNAL, HOME_SIGNAL, record_transition, save_settled

LONDON = ZoneInfo("Europe/London")
ACCOUNT = "A-1234ABCD"
HALF = timedelta(minutes=30)
DAYS = [date(2026, 10, 24), date(2026, 10, 25)]  # the autumn change: 48 and 50 half-hours


def _row(start: datetime) -> SettledHalfHour:
    low = in_fixed_window(start)
    evening = start.astimezone(LONDON).time() in (time(19, 30), time(20, 0))
    home_band = "low" if low or evening else "standard"
    car_kwh = 3.5 if evening else 0.0
    buckets = (
        Bucket("HOME LOW RATE", "home low", 0.2 if home_band == "low" else 0.0,
               1.4 if home_band == "low" else 0.0, 7.0),
        Bucket("HOME STANDARD RATE", "home standard", 0.2 if home_band != "low" else 0.0,
               5.6 if home_band != "low" else 0.0, 28.0),
        Bucket("EV LOW RATE", "car low", car_kwh, car_kwh * 7.0, 7.0),
        Bucket("EV STANDARD RATE", "car standard", 0.0, 0.0, 28.0),
    )  # fmt: skip
    return SettledHalfHour(
        start, start + HALF, home_band, "low" if evening else "none", buckets, 1.0
    )


def _prepare(tmp_path: Path, *, signals: bool = True, disagree_at: time | None = None) -> Path:
    db = tmp_path / "ioagent.db"
    store = Store.open(db)
    rows = []
    for day in DAYS:
        start, end = local_day_bounds(day, LONDON)
        while start < end:
            rows.append(_row(start))
            start += HALF
    save_settled(store, ACCOUNT, rows, datetime(2026, 10, 28, tzinfo=UTC))
    if signals:
        for row in rows:
            home = row.home_band == "low"
            if disagree_at is not None and row.start.astimezone(LONDON).time() == disagree_at:
                home = not home
            record_transition(store, ACCOUNT, HOME_SIGNAL, row.start, home)
            record_transition(store, ACCOUNT, CAR_SIGNAL, row.start, row.car_band == "low")
    store.close()
    config = tmp_path / "ioagent.toml"
    config.write_text(
        f'[octopus]\napi_key = "sk_live_FAKEledgerTestKey0001"\n\n[storage]\npath = "{db}"\n'
    )
    return config


def test_day_table_fits_80_columns_and_agrees_fully(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _prepare(tmp_path)
    assert main(["ledger", "--config", str(config), "--days", "2"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    # every column heading stands apart (the car's standard rate once ran into "standing")
    (heading,) = [line for line in out.splitlines() if "standing" in line]
    assert heading.split() == ["home", "low", "home", "std", "car", "low", "car", "std",
                               "standing", "total", "agree"]  # fmt: skip
    lines = [line for line in out.splitlines() if line.startswith("2026-10-2")]
    assert len(lines) == 2
    assert all(line.endswith("100.0%") for line in lines)
    # 25 Oct: 50 half-hours, 1 p standing each
    assert " 0.50 " in lines[1]


def test_json_has_the_totals_per_bucket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _prepare(tmp_path)
    assert main(["ledger", "--config", str(config), "--days", "1", "--json"]) == 0
    (account,) = json.loads(capsys.readouterr().out)["accounts"]
    (day,) = account["days"]
    assert day["day"] == "2026-10-25"
    assert day["half_hours"] == day["expected_half_hours"] == 50
    assert day["buckets"]["car low"] == {"kwh": 7.0, "gbp": 0.49}
    assert day["agreement"]["ratio"] == 1.0


def test_one_day_shows_each_half_hour_and_marks_disagreements(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _prepare(tmp_path, disagree_at=time(12, 0))
    assert main(["ledger", "--config", str(config), "--day", "2026-10-25"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    # the repeated hour of the autumn change shows both times, told apart by their zone
    assert any(line.startswith("01:00 BST") for line in out.splitlines())
    assert any(line.startswith("01:00 GMT") for line in out.splitlines())
    assert "!! signal offpeak, billed home standard: no charging" in out
    assert "Agreement: 49 of 50 compared half-hours (98.0%)" in out


def test_without_recorded_signals_the_agreement_is_not_claimed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _prepare(tmp_path, signals=False)
    assert main(["ledger", "--config", str(config), "--day", "2026-10-24", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert {row["agreed"] for row in payload["half_hour_rows"]} == {None}
    assert len(payload["half_hour_rows"]) == 48


def test_bad_arguments_and_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["ledger", "--day", "25/10/2026"])
    assert main(["ledger", "--days", "0"]) == 2
    config = tmp_path / "ioagent.toml"
    config.write_text(
        f'[octopus]\napi_key = "sk_live_FAKEledgerTestKey0001"\n\n[storage]\npath = "{tmp_path / "x.db"}"\n'
    )
    assert main(["ledger", "--config", str(config)]) == 1
    assert "does not exist" in capsys.readouterr().err
