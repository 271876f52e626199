from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ioagent.cli import main
from ioagent.config import TariffSettings
from ioagent.kraken.types import Agreement, CompletedDispatch, Dispatch
from ioagent.runtime.agent import PRODUCT_META
from ioagent.store.database import SlotRecord, Store, watching_since_key
from ioagent.store.history import (
    CAP_FLAG_META,
    NightSummary,
    night_bounds,
    night_of,
    nightly_history,
    read_history,
    summarise_night,
)
from ioagent.tariff.four_rate import FourRateRules
from ioagent.tariff.product import Family, from_agreement
from ioagent.tariff.rules import TariffRules
from ioagent.tariff.signals import ProductRules
from ioagent.timeutil import iso_z

LONDON = ZoneInfo("Europe/London")
RULES = TariffRules(zone=LONDON, offpeak_start=time(23, 30), offpeak_end=time(5, 30))
ACCOUNT = "A-1234ABCD"
REPO = Path(__file__).resolve().parent.parent
LEGACY_CODE = "INTELLI-VAR-22-10-14"
FOUR_RATE_CODE = "IOG-SMB-VAR-26-01-01"


def product_rules(family: Family, legacy: TariffRules = RULES) -> ProductRules:
    """The rules of ``family`` with the default settings (23:30-05:30, 6 h allowance)."""
    return ProductRules(family=family, legacy=legacy, four_rate=FourRateRules(zone=LONDON))


LEGACY = product_rules("legacy")
FOUR_RATE = product_rules("four_rate")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def completed(
    start: str,
    end: str,
    kwh: float | None,
    source: str | None = "smart-charge",
    location: str | None = "AT_HOME",
) -> CompletedDispatch:
    return CompletedDispatch(utc(start), utc(end), kwh, source, location)


def withdrawn_slot(start: str, end: str, withdrawn: bool = True) -> SlotRecord:
    return SlotRecord(
        account=ACCOUNT,
        device_id="dev",
        start=utc(start),
        end=utc(end),
        type="SMART",
        kwh=1.0,
        first_seen=utc(start) - timedelta(hours=3),
        last_seen=utc(start) - timedelta(hours=2),
        withdrawn_at=utc(start) - timedelta(hours=1) if withdrawn else None,
        replaced_at=None,
    )


# --- night boundaries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "night"),
    [
        ("2026-02-08 05:29:59", date(2026, 2, 7)),  # GMT: 05:30 local is 05:30 UTC
        ("2026-02-08 05:30:00", date(2026, 2, 8)),
        ("2026-02-07 23:59:00", date(2026, 2, 7)),
        ("2026-07-01 04:29:59", date(2026, 6, 30)),  # BST: 05:30 local is 04:30 UTC
        ("2026-07-01 04:30:00", date(2026, 7, 1)),
    ],
)
def test_night_of(instant: str, night: date) -> None:
    assert night_of(utc(instant), RULES) == night


@pytest.mark.parametrize(
    ("night", "length_hours", "fixed_hours"),
    [
        (date(2026, 2, 7), 24, 6.0),
        # Clocks go forward at 01:00 GMT on 29 March: 23:30 GMT -> 05:30 BST is 5 h.
        (date(2026, 3, 28), 23, 5.0),
        # Clocks go back at 02:00 BST on 25 October: 23:30 BST -> 05:30 GMT is 7 h.
        (date(2026, 10, 24), 25, 7.0),
    ],
)
def test_nights_follow_the_wall_clock_through_dst(
    night: date, length_hours: int, fixed_hours: float
) -> None:
    start, end = night_bounds(night, RULES)
    assert end - start == timedelta(hours=length_hours)
    summary = summarise_night(night, LEGACY, [], [], now=end + timedelta(days=1))
    assert summary.fixed_offpeak_hours == fixed_hours
    assert summary.extra_offpeak_hours == 0


# --- the hand-computed fixture -------------------------------------------------------------
#
# February, so London is on GMT and local time equals UTC. Fixed window 23:30-05:30, rounding
# to half-hours, no cap. The figures are the same on legacy and on four-rate: the night of the
# 7th uses 5.5 h of the allowance period from 02-07 12:00 (b 0.5, d 1.0, a 1.0, c 1.5, f 1.5).
#   night 2026-02-07 = [02-07 05:30, 02-08 05:30)     night 2026-02-08 = [02-08 05:30, 02-09 05:30)
#
# | completed dispatch                   | widened      | extra h (night)              | kWh       |
# |--------------------------------------|--------------|------------------------------|-----------|
# | a 02-07 19:30-20:15 smart AT_HOME    | 19:30-20:30  | 1.0 (07)                     | 3.5 smart |
# | b 02-07 13:37:11-13:38:27 source null| -            | 0 (nothing known of it)      | 0.2 other |
# | c 02-07 23:00-00:30 smart AT_HOME    | 23:00-00:30  | 0.5 (07): 23:00-23:30 only   | 5.0 smart |
# | d 02-07 15:00-16:00 smart AWAY       | 15:00-16:00  | 1.0 (07): completed, R7      | 7.0 away  |
# | e 02-07 17:00-17:30 bump AT_HOME     | -            | 0 (boost is peak)            | 3.0 boost |
# | f 02-08 05:00-06:10 smart AT_HOME    | 05:00-06:30  | 0 (07, inside fixed);        | 4.0 smart |
# |                                      |              | 1.0 (08): 05:30-06:30        | (07)      |
# | g 02-08 21:10-21:20 smart location ? | 21:00-21:30  | 0.5 (08)                     | 0.8 smart |
#
# night 07: fixed 6.0, extra 1.0 + 0.5 + 1.0 = 2.5, smart 3.5 + 5.0 + 4.0 = 12.5, away 7.0,
#           boost 3.0, other 0.2 (b: source null and no planned slot known for it);
#           withdrawn: the 18:00 slot (the 21:00 one was not withdrawn).
# night 08 at now = 02-09 03:00 (in progress): fixed 23:30-03:00 = 3.5, extra 1.0 + 0.5 = 1.5,
#           smart 0.8, away 0, boost 0, withdrawn: the 02-09 01:00 slot.

FIXTURE_COMPLETED = [
    completed("2026-02-07 19:30", "2026-02-07 20:15", -3.5),
    completed("2026-02-07 13:37:11", "2026-02-07 13:38:27", -0.2, source=None, location=None),
    completed("2026-02-07 23:00", "2026-02-08 00:30", -5.0),
    completed("2026-02-07 15:00", "2026-02-07 16:00", -7.0, location="AWAY"),
    completed("2026-02-07 17:00", "2026-02-07 17:30", -3.0, source="bump-charge"),
    completed("2026-02-08 05:00", "2026-02-08 06:10", -4.0),
    completed("2026-02-08 21:10", "2026-02-08 21:20", 0.8, location=None),
]
FIXTURE_WITHDRAWN = [
    withdrawn_slot("2026-02-07 18:00", "2026-02-07 19:00"),
    withdrawn_slot("2026-02-07 21:00", "2026-02-07 22:00", withdrawn=False),
    withdrawn_slot("2026-02-09 01:00", "2026-02-09 02:00"),
]
FIXTURE_NOW = utc("2026-02-09 03:00")
EXPECTED = [
    NightSummary(
        night=date(2026, 2, 7),
        start=utc("2026-02-07 05:30"),
        end=utc("2026-02-08 05:30"),
        complete=True,
        fixed_offpeak_hours=6.0,
        extra_offpeak_hours=2.5,
        smart_kwh=12.5,
        away_kwh=7.0,
        boost_kwh=3.0,
        other_kwh=0.2,
        slots_withdrawn=1,
    ),
    NightSummary(
        night=date(2026, 2, 8),
        start=utc("2026-02-08 05:30"),
        end=utc("2026-02-09 05:30"),
        complete=False,
        fixed_offpeak_hours=3.5,
        extra_offpeak_hours=1.5,
        smart_kwh=0.8,
        away_kwh=0.0,
        boost_kwh=0.0,
        other_kwh=0.0,
        slots_withdrawn=1,
    ),
]


@pytest.mark.parametrize("rules", [LEGACY, FOUR_RATE], ids=["legacy", "four_rate"])
def test_nightly_history_matches_the_hand_computed_fixture(rules: ProductRules) -> None:
    history = nightly_history(FIXTURE_COMPLETED, FIXTURE_WITHDRAWN, rules, FIXTURE_NOW, nights=2)
    assert [n.as_json() for n in history] == [n.as_json() for n in EXPECTED]


def test_more_nights_than_recorded_show_zeros() -> None:
    history = nightly_history(FIXTURE_COMPLETED, FIXTURE_WITHDRAWN, LEGACY, FIXTURE_NOW, nights=4)
    assert [n.night for n in history] == [date(2026, 2, d) for d in (5, 6, 7, 8)]
    assert history[0].extra_offpeak_hours == 0 and history[0].smart_kwh == 0
    assert history[0].fixed_offpeak_hours == 6.0


def test_the_cap_limits_extra_hours() -> None:
    # Cap of 1 h: 13:00-14:00 uses the whole budget, so 19:00-20:00 is billed at peak.
    capped = TariffRules(
        zone=LONDON,
        offpeak_start=time(23, 30),
        offpeak_end=time(5, 30),
        smart_cap=True,
        smart_cap_hours=1.0,
    )
    slots = [
        completed("2026-02-07 13:00", "2026-02-07 14:00", -7.0),
        completed("2026-02-07 19:00", "2026-02-07 20:00", -7.0),
    ]
    night = date(2026, 2, 7)
    with_cap = product_rules("legacy", capped)
    assert summarise_night(night, with_cap, slots, [], FIXTURE_NOW).extra_offpeak_hours == 1.0
    assert summarise_night(night, LEGACY, slots, [], FIXTURE_NOW).extra_offpeak_hours == 2.0


def test_without_rounding_only_the_slot_itself_counts() -> None:
    exact = TariffRules(
        zone=LONDON, offpeak_start=time(23, 30), offpeak_end=time(5, 30), round_to_half_hour=False
    )
    slots = [completed("2026-02-07 19:30", "2026-02-07 20:15", -3.5)]
    summary = summarise_night(
        date(2026, 2, 7), product_rules("legacy", exact), slots, [], FIXTURE_NOW
    )
    assert summary.extra_offpeak_hours == 0.75


# --- the product's rules -------------------------------------------------------------------
#
# The same completed dispatches read by each family's rules (February: local time is UTC;
# 23:30-05:30 window, 6 h allowance from noon to noon, no legacy cap). The night is that of
# 7 February, [02-07 05:30, 02-08 05:30), counted at FIXTURE_NOW (complete).

LONG_DAY = [completed("2026-02-07 12:00", "2026-02-07 22:00", -70.0)]
NIGHT_THEN_MORNING = [
    # The night before: 6 h in the window, all of the allowance period from 02-06 12:00.
    completed("2026-02-06 23:30", "2026-02-07 05:30", -42.0),
    completed("2026-02-07 11:00", "2026-02-07 12:00", -7.0),
]
ACROSS_NOON = [
    # 00:00-05:30 is 11 half-hours of the period from 02-06 12:00: 11:00 is the 12th.
    completed("2026-02-07 00:00", "2026-02-07 05:30", -38.5),
    completed("2026-02-07 11:00", "2026-02-07 13:00", -14.0),
]
UNPLACED_FIRST = [
    # No kind known (source null, no plan seen): it uses 5.5 h of allowance, earns nothing.
    completed("2026-02-07 12:00", "2026-02-07 17:30", -38.5, source=None),
    completed("2026-02-07 17:30", "2026-02-07 19:00", -10.5),
]
AWAY_COMPLETED = [completed("2026-02-07 15:00", "2026-02-07 16:00", -7.0, location="AWAY")]


@pytest.mark.parametrize(
    ("family", "slots", "extra"),
    [
        # A 10 h daytime charge: legacy counts all of it, four-rate its first 6 h (to 18:00).
        ("legacy", LONG_DAY, 10.0),
        ("four_rate", LONG_DAY, 6.0),
        ("other", LONG_DAY, 0.0),
        # The allowance spans nights: the previous night's window charge used it up.
        ("legacy", NIGHT_THEN_MORNING, 1.0),
        ("four_rate", NIGHT_THEN_MORNING, 0.0),
        # 11:00 is within, 11:30 beyond; from 12:00 a new period (docs/tariff.md).
        ("legacy", ACROSS_NOON, 2.0),
        ("four_rate", ACROSS_NOON, 1.5),
        # A record of no known kind makes no extra hours, but on four-rate it uses allowance.
        ("legacy", UNPLACED_FIRST, 1.5),
        ("four_rate", UNPLACED_FIRST, 0.5),
        # A completed dispatch counts whatever its location (R7).
        ("legacy", AWAY_COMPLETED, 1.0),
        ("four_rate", AWAY_COMPLETED, 1.0),
    ],
)
def test_extra_hours_follow_the_products_rules(
    family: Family, slots: list[CompletedDispatch], extra: float
) -> None:
    summary = summarise_night(date(2026, 2, 7), product_rules(family), slots, [], FIXTURE_NOW)
    assert summary.extra_offpeak_hours == extra
    assert summary.fixed_offpeak_hours == 6.0


# --- the command ---------------------------------------------------------------------------


def _prepare(tmp_path: Path, now: datetime) -> tuple[Path, date]:
    """A database whose last complete night holds the dispatches a and e of the fixture table
    as Octopus sends completed records (``meta.source`` null, the boost too), the slots ioagent
    saw planned for them, a slot withdrawn before it started and one moved (replaced), plus a
    config file."""
    night = night_of(now, RULES) - timedelta(days=1)

    def local(hh: int, mm: int) -> datetime:
        return datetime.combine(night, time(hh, mm), tzinfo=LONDON).astimezone(UTC)

    db = tmp_path / "state" / "ioagent.db"
    store = Store.open(db)
    # A daemon that has been watching for three weeks.
    store.set_meta(watching_since_key(ACCOUNT), iso_z(now - timedelta(days=21)))
    store.add_completed(
        ACCOUNT,
        [
            CompletedDispatch(local(19, 30), local(20, 15), -3.5, None, "AT_HOME"),
            CompletedDispatch(local(17, 0), local(17, 30), -3.0, None, "AT_HOME"),
        ],
    )
    ran = [
        Dispatch(local(17, 0), local(17, 30), "BOOST", 3.0),
        Dispatch(local(19, 30), local(20, 15), "SMART", 3.5),
    ]
    store.save_plan(ACCOUNT, "ev", ran, local(17, 5))
    early = local(12, 0)
    store.save_plan(ACCOUNT, "dev", [Dispatch(local(18, 0), local(19, 0), "SMART", 2.0)], early)
    store.save_plan(ACCOUNT, "dev", [], early + timedelta(minutes=5))
    moved_from = [Dispatch(local(21, 0), local(22, 0), "SMART", 2.0)]
    moved_to = [Dispatch(local(21, 0), local(22, 30), "SMART", 2.0)]
    store.save_plan(ACCOUNT, "dev", moved_from, early + timedelta(minutes=10))
    store.save_plan(ACCOUNT, "dev", moved_to, early + timedelta(minutes=15))
    store.close()
    config = tmp_path / "ioagent.toml"
    config.write_text(
        f'[octopus]\napi_key = "sk_live_FAKEhistoryTest0000001"\n\n[storage]\npath = "{db}"\n'
    )
    return config, night


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IOAGENT_")}


def test_history_json_from_a_prepared_database(tmp_path: Path) -> None:
    config, night = _prepare(tmp_path, datetime.now(UTC))
    result = subprocess.run(
        [sys.executable, "-m", "ioagent", "history", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=_clean_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["timezone"] == "Europe/London"
    (account,) = report["accounts"]
    assert account["account"] == ACCOUNT and account["smart_cap"] is False
    assert len(account["nights"]) == 14
    (row,) = [n for n in account["nights"] if n["night"] == night.isoformat()]
    assert row["complete"] is True
    # a: 19:30-20:15 widens to 19:30-20:30 (1 h, 3.5 kWh); e: boost 3.0 kWh, no extra time.
    assert row["extra_offpeak_hours"] == 1.0
    assert row["smart_kwh"] == 3.5
    assert row["boost_kwh"] == 3.0
    assert row["slots_withdrawn"] == 1
    assert account["totals"]["smart_kwh"] == 3.5


def test_history_table_and_days(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, night = _prepare(tmp_path, datetime.now(UTC))
    assert main(["history", "--config", str(config), "--days", "3"]) == 0
    out = capsys.readouterr().out
    assert f"Account {ACCOUNT}" in out
    rows = [line for line in out.splitlines() if line[:4].isdigit()]
    assert len(rows) == 3
    (row,) = [line for line in rows if line.startswith(night.isoformat())]
    # Columns: night, fixed h (5-7 depending on DST), extra h, smart, away, boost, other,
    # withdrawn.
    assert row.split()[2:] == ["1.0", "3.50", "0.00", "3.00", "0.00", "1"]


def _store_product(db: Path, family: Family | None) -> None:
    """Record the account's product as the daemon does once it has read the agreement
    (``from_agreement``, then ``stored_json`` under ``PRODUCT_META``); None: never read."""
    if family is None:
        return
    code = LEGACY_CODE if family == "legacy" else FOUR_RATE_CODE
    agreement = Agreement(code, f"E-1R-{code}-H", utc("2025-01-01 00:00"), None, "1900000000001")
    store = Store.open(db)
    store.set_meta(PRODUCT_META.format(account=ACCOUNT), from_agreement(agreement).stored_json())
    store.close()


def _prepare_long_charge(tmp_path: Path, now: datetime, setting: str) -> tuple[Path, date]:
    """A database whose last complete night holds one 10 h smart charge, 12:00-22:00 local,
    stored as Octopus sends it (``meta.source`` null) with the slot ioagent saw planned."""
    night = night_of(now, RULES) - timedelta(days=1)
    begin = datetime.combine(night, time(12, 0), tzinfo=LONDON).astimezone(UTC)
    finish = datetime.combine(night, time(22, 0), tzinfo=LONDON).astimezone(UTC)
    db = tmp_path / "ioagent.db"
    store = Store.open(db)
    store.set_meta(watching_since_key(ACCOUNT), iso_z(now - timedelta(days=21)))
    store.save_plan(ACCOUNT, "ev", [Dispatch(begin, finish, "SMART", 70.0)], begin)
    store.add_completed(ACCOUNT, [CompletedDispatch(begin, finish, -70.0, None, "AT_HOME")])
    store.close()
    config = tmp_path / "ioagent.toml"
    config.write_text(
        '[octopus]\napi_key = "sk_live_FAKEhistoryTest0000001"\n'
        f'account_number = "{ACCOUNT}"\n[storage]\npath = "ioagent.db"\n'
        f'[tariff]\nproduct = "{setting}"\n'
    )
    return config, night


@pytest.mark.parametrize(
    ("stored", "setting", "family", "source", "product", "extra", "says"),
    [
        ("legacy", "auto", "legacy", "account", LEGACY_CODE, 10.0, "Rules: legacy"),
        ("four_rate", "auto", "four_rate", "account", FOUR_RATE_CODE, 6.0, "Rules: four-rate"),
        # Never read from the account: the cautious four-rate rules, as the daemon applies.
        (None, "auto", "four_rate", "default", None, 6.0, "four-rate, the cautious default"),
        # `[tariff] product` overrides what the account said, keeping its code.
        ("legacy", "four_rate", "four_rate", "config", None, 6.0, "set by [tariff] product"),
        ("four_rate", "legacy", "legacy", "config", None, 10.0, "set by [tariff] product"),
        ("four_rate", "four_rate", "four_rate", "config", FOUR_RATE_CODE, 6.0, FOUR_RATE_CODE),
    ],
)
def test_history_uses_the_accounts_product(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    stored: Family | None,
    setting: str,
    family: str,
    source: str,
    product: str | None,
    extra: float,
    says: str,
) -> None:
    config, night = _prepare_long_charge(tmp_path, datetime.now(UTC), setting)
    _store_product(tmp_path / "ioagent.db", stored)
    assert main(["history", "--config", str(config), "--json", "--days", "2"]) == 0
    (account,) = json.loads(capsys.readouterr().out)["accounts"]
    assert (account["family"], account["product_source"]) == (family, source)
    assert account["product"] == product
    assert account["allowance_hours"] == (6.0 if family == "four_rate" else None)
    (row,) = [n for n in account["nights"] if n["night"] == night.isoformat()]
    assert row["extra_offpeak_hours"] == extra
    assert row["smart_kwh"] == 70.0

    assert main(["history", "--config", str(config), "--days", "2"]) == 0
    out = capsys.readouterr().out
    assert says in " ".join(out.split())
    (line,) = [line for line in out.splitlines() if line.startswith(night.isoformat())]
    assert line.split()[2:4] == [f"{extra:.1f}", "70.00"]
    assert max(len(line) for line in out.splitlines()) <= 80, out


def test_the_allowance_reaches_back_before_the_first_night_shown(tmp_path: Path) -> None:
    # --days 1 at 02-07 14:00: the night shown starts at 05:30, but the allowance period holding
    # its 11:00 slot began at 02-06 12:00 and the 23:30-05:30 charge used all of it.
    store = Store.open(tmp_path / "ioagent.db")
    try:
        store.set_meta(watching_since_key(ACCOUNT), iso_z(utc("2026-02-01 00:00")))
        store.add_completed(ACCOUNT, NIGHT_THEN_MORNING)
        now = utc("2026-02-07 14:00")
        legacy = read_history(store, ACCOUNT, TariffSettings(product="legacy"), now, 1)
        four_rate = read_history(store, ACCOUNT, TariffSettings(product="four_rate"), now, 1)
    finally:
        store.close()
    assert [n.night for n in legacy.nights] == [date(2026, 2, 7)]
    assert legacy.nights[0].extra_offpeak_hours == 1.0
    assert four_rate.nights[0].extra_offpeak_hours == 0.0


def test_history_follows_the_device_cap_flag_when_auto(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _night = _prepare(tmp_path, datetime.now(UTC))
    db = tmp_path / "state" / "ioagent.db"
    store = Store.open(db)
    store.set_meta(CAP_FLAG_META.format(account=ACCOUNT), "ENABLED")
    store.close()
    # The cap is a legacy rule; on four-rate the allowance takes its place.
    _store_product(db, "four_rate")
    assert main(["history", "-c", str(config), "--json", "--days", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["accounts"][0]["smart_cap"] is False
    _store_product(db, "legacy")
    result = subprocess.run(
        [sys.executable, "-m", "ioagent", "history", "-c", str(config), "--json", "--days", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=_clean_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accounts"][0]["smart_cap"] is True


def test_history_without_a_database_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ioagent.toml"
    missing = tmp_path / "nothing" / "ioagent.db"
    config.write_text(
        f'[octopus]\napi_key = "sk_live_FAKEhistoryTest0000001"\n\n[storage]\npath = "{missing}"\n'
    )
    assert main(["history", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"database {missing} does not exist" in err
    assert "`ioagent run` creates it" in err, "a new user is told what makes it"
    assert not missing.parent.exists()


def test_history_rejects_zero_days(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--days", "0"]) == 2
    assert "--days must be at least 1" in capsys.readouterr().err


def test_a_fresh_database_reports_only_the_night_it_has_seen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    db = tmp_path / "ioagent.db"
    store = Store.open(db)
    store.set_meta(watching_since_key(ACCOUNT), iso_z(now - timedelta(seconds=10)))
    store.close()
    config = tmp_path / "ioagent.toml"
    config.write_text(
        '[octopus]\napi_key = "sk_live_FAKEhistoryTest0000001"\n'
        f'account_number = "{ACCOUNT}"\n[storage]\npath = "ioagent.db"\n'
    )
    assert main(["history", "--config", str(config), "--json"]) == 0
    (account,) = json.loads(capsys.readouterr().out)["accounts"]
    (night,) = account["nights"]
    assert night["night"] == night_of(now, RULES).isoformat()
    assert night["complete"] is False
    # At most the fixed hours of one night, never 13 nights of them.
    assert account["totals"]["fixed_offpeak_hours"] <= 7.0


def test_a_database_the_daemon_never_polled_with_has_no_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Store.open(tmp_path / "ioagent.db").close()
    config = tmp_path / "ioagent.toml"
    config.write_text(
        '[octopus]\napi_key = "sk_live_FAKEhistoryTest0000001"\n'
        f'account_number = "{ACCOUNT}"\n[storage]\npath = "ioagent.db"\n'
    )
    assert main(["history", "--config", str(config)]) == 0
    assert "No history recorded yet" in capsys.readouterr().out


def test_history_finds_the_database_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config, night = _prepare(tmp_path, datetime.now(UTC))
    # The same database, named relative to the config file's folder.
    config.write_text(
        '[octopus]\napi_key = "sk_live_FAKEhistoryTest0000001"\n[storage]\npath = "state/ioagent.db"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["history", "--config", str(config), "--json"]) == 0
    (account,) = json.loads(capsys.readouterr().out)["accounts"]
    assert any(n["night"] == night.isoformat() and n["smart_kwh"] == 3.5 for n in account["nights"])
    assert not (elsewhere / "state").exists()


def test_the_store_starts_its_record_at_the_earliest_thing_it_saw(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "ioagent.db")
    try:
        assert store.first_seen(ACCOUNT) is None
        seen_at = utc("2026-02-07 12:00")
        store.save_plan(ACCOUNT, "dev", [Dispatch(seen_at, seen_at, "SMART", 1.0)], seen_at)
        assert store.first_seen(ACCOUNT) == seen_at
        # Octopus reports a dispatch from before ioagent started: that night has data too.
        earlier = utc("2026-02-06 19:30")
        store.add_completed(
            ACCOUNT,
            [CompletedDispatch(earlier, earlier + timedelta(hours=1), -2.0, "smart-charge", None)],
        )
        assert store.first_seen(ACCOUNT) == earlier
        assert store.first_seen("A-00000000") is None
    finally:
        store.close()


def test_nights_before_the_record_starts_are_left_out() -> None:
    since = utc("2026-02-08 10:00")  # during the night of 8 February
    history = nightly_history([], [], LEGACY, utc("2026-02-10 12:00"), nights=14, since=since)
    assert [n.night for n in history] == [date(2026, 2, 8), date(2026, 2, 9), date(2026, 2, 10)]
