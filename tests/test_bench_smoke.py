"""The benchmark harness runs on tiny inputs and returns well-formed results (no timing checks)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench import accounts, commands, live, policy, process, report
from bench.stats import percentile, summary
from ioagent.simulator.server import run_simulator
from tests.broker import Broker
from tests.harness import Seen

T0 = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)


def test_percentile_and_summary_by_hand() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.99) == pytest.approx(4.96)
    assert math.isnan(percentile([], 0.5))
    stats = summary([0.001, 0.002, 0.003], scale=1000.0)
    assert stats == {
        "n": 3,
        "min": 1.0,
        "p50": 2.0,
        "p95": 2.9,
        "p99": 3.0,
        "max": 3.0,
        "mean": 2.0,
    }
    assert summary([]) == {"n": 0}


def test_flip_lateness_matches_flips_in_order() -> None:
    b1, b2 = T0, T0 + timedelta(seconds=2)
    messages = [
        Seen("t", "false", True, b1.timestamp() - 5),
        Seen("t", "true", True, b1.timestamp() + 0.010),
        Seen("other", "false", True, b2.timestamp()),
        Seen("t", "false", True, b2.timestamp() + 0.030),
    ]
    lateness = live.flip_lateness(messages, "t", [(b1, "true"), (b2, "false")])
    assert lateness == pytest.approx([0.010, 0.030])
    # A flip that never came is reported as missing, not matched to an older message.
    assert live.flip_lateness(messages[:2], "t", [(b1, "true"), (b2, "false")]) == pytest.approx(
        [0.010]
    )


def test_aligned_layout_puts_offpeak_flips_on_the_half_hour() -> None:
    first = live.ceil_half_hour(T0 + timedelta(minutes=1))
    assert first == T0 + timedelta(minutes=30)
    config = live.AlignedConfig(kinds=("aligned", "rounded", "fixed"))
    slots, fixed, expected = live.aligned_layout(config, first)
    hour = timedelta(hours=1)
    assert slots == [
        (first, first + timedelta(minutes=30)),
        (first + hour + timedelta(minutes=7), first + hour + timedelta(minutes=23)),
    ]
    assert fixed == (first + 2 * hour, first + 2 * hour + timedelta(minutes=30))
    offpeak = [e for e in expected if e.topic == "offpeak"]
    assert len(offpeak) == 6 and all(e.on_half_hour for e in offpeak)
    dispatching = [e for e in expected if e.topic == "dispatching"]
    assert [e.on_half_hour for e in dispatching] == [True, True, False, False]
    with pytest.raises(ValueError):
        live.aligned_layout(live.AlignedConfig(kinds=("fixed", "fixed")), first)


def test_detection_delay_is_time_to_the_next_poll() -> None:
    polls = [T0, T0 + timedelta(minutes=5)]
    changes = [T0 + timedelta(minutes=1), T0 + timedelta(minutes=5), T0 + timedelta(hours=1)]
    assert policy.detection_delays(polls, changes) == [240.0, 0.0, None]
    assert policy.max_in_rolling_hour([T0 + timedelta(minutes=m) for m in (0, 30, 59, 61)]) == 3


async def test_simulated_idle_day_polls_twice_an_hour() -> None:
    day = policy.idle_day()
    day.end = day.start + timedelta(hours=3)
    trace = await policy.simulate(day)
    figures = policy.day_figures(trace)
    assert figures["planned_dispatch_queries"] == 6
    assert figures["max_planned_in_rolling_hour"] == 2
    assert all(poll.second == 20 and poll.minute % 30 == 1 for poll in trace.polls)
    # The login at the start-up poll of the 2 h warm-up (20 s after :00, past the quiet
    # seconds), then a refresh 5 minutes before each JWT expires: 55, 110, 165, 220 and 275
    # minutes after it; the last three fall in the window.
    login = day.start - timedelta(hours=2) + timedelta(seconds=20)
    assert trace.token_requests == [login + timedelta(minutes=55 * n) for n in (3, 4, 5)]
    assert figures["token_requests"] == 3
    assert figures["total_requests"] == 6 + 3
    # 00:45:20 (token), 01:01:20 and 01:31:20 (polls), 01:40:20 (token) lie within one hour.
    assert figures["max_requests_in_rolling_hour"] == 4


async def test_simulated_refreshes_respect_the_hourly_budget() -> None:
    day = policy.idle_day()
    day.end = day.start + timedelta(hours=2)
    day.commands = [
        (day.start + timedelta(seconds=37 + 20 * n), "refresh", "now") for n in range(300)
    ]
    figures = policy.day_figures(await policy.simulate(day))
    assert figures["max_planned_in_rolling_hour"] <= 20
    assert figures["refresh_refused"] > 0
    assert figures["refresh_accepted"] + figures["refresh_refused"] == 300


async def test_harness_runs_on_tiny_inputs(broker: Broker, tmp_path: Path) -> None:
    config = live.LiveConfig(slots=2, lead_seconds=3.0, duration_seconds=3.0, change_offsets=(0.5,))
    p1 = await live.run_live(config, tmp_path / "p1")
    assert p1["boundaries"] == 4
    assert p1["all_flips_ms"]["n"] + p1["missed_flips"] == 8
    assert p1["planned_queries_real"] >= 1 and p1["planned_queries_predicted"] >= 1
    assert len(p1["changes"]) == 1
    # The car charges for the whole run, so the daemon is still active at its end.
    assert p1["charging"] is True and p1["daemon_active_at_end"] is True
    assert p1["polling"] == {"active_interval": live.CHECK_INTERVAL}

    aligned = await live.run_aligned(live.AlignedConfig(kinds=("rounded",)), tmp_path / "p1a")
    # A rounded slot: offpeak on at :00/:30, dispatching at +7 and +23 min, offpeak off.
    assert aligned["boundaries"] == 4 and aligned["half_hour_boundaries"] == 2
    assert aligned["expected_flips"] == 4
    assert len(aligned["lateness_ms"]) + aligned["missed_flips"] == 4

    p7 = await commands.command_overhead(1, tmp_path / "p7")
    assert p7["publish_to_api_ms"]["n"] == len(commands.COMMANDS)
    assert p7["api_to_reply_ms"]["n"] == len(commands.COMMANDS)
    assert "UpdateDeviceSmartControl" in p7["operations_seen"]
    # ioagent as shipped sets TCP_NODELAY itself; the bench only reads it.
    assert p7["ioagent_nodelay"] is True and p7["broker_nodelay"] is False

    async with run_simulator(accounts.populated_state(2)) as sim:
        p6 = await accounts.run_agents(2, sim.graphql_url, broker.host, broker.port, rounds=2)
    assert p6["failures"] == [0, 0]
    assert p6["planned_slots_seen"] == 6
    assert len(p6["round_seconds"]) == 2
    # Round 1: a login, then per account the agreements (the product, read once before the
    # first poll when nothing is known), a device list and a poll; round 2: a poll each.
    assert p6["round1_login"]["requests"] == 2
    assert p6["round1_first_poll"]["requests"] == 6
    assert p6["requests"] == [8, 2]
    assert p6["round_seconds"][0] == pytest.approx(
        p6["round1_login"]["seconds"] + p6["round1_first_poll"]["seconds"], abs=0.002
    )

    p5 = await process.cold_starts(1, tmp_path / "p5")
    assert p5["runs"] == 1 and p5["cold_first_publish_s"]["n"] == 1
    p4 = await process.steady_state(10, 1.0, tmp_path / "p4")
    assert p4["publishes"] >= 10
    assert p4["rss_after_publishes_mb"] > 0

    p23 = await policy.policy_figures(samples=20)
    assert [d["scenario"] for d in p23["days"]][:3] == [
        "idle",
        "one evening session",
        "heavy re-planning",
    ]

    results = {
        "p1_live": p1,
        "p1_aligned": aligned,
        "p23_policy": p23,
        "p4": p4,
        "p5": p5,
        "p6": {"concurrency": 50, "rounds": 2, "runs": [p6]},
        "p7": {"stock": p7, "broker_nodelay": p7},
        "machine": {"nproc": 2, "cpu": "x", "python": "3", "platform": "p", "date": "d"},
        "quick": True,
        "command": "./scripts/bench --quick",
        "elapsed_s": 1.0,
    }
    page = report.render(results)
    assert page.startswith("# Benchmarks")
    assert "./scripts/bench --quick" in page
    for heading in (
        "## P1",
        "## P2 and P3",
        "## P4",
        "## P5",
        "## P6",
        "## P7",
        "## Where we miss",
    ):
        assert heading in page
    assert "**Half-hour boundaries.**" in page
    # 8 boundaries cannot show the 100-boundary target as met, and the page says why.
    assert "**missed**" in page.split("| P1 |")[1].split("\n")[0]
    assert "fewer than 100 (quick mode)" in page
    # Two accounts cannot show the 1,000-account target as met.
    assert "| P6 |" in page and "**missed**" in page.split("| P6 |")[1].split("\n")[0]


def test_p6_judges_round_one_too() -> None:
    run = {
        "accounts": 1000,
        "round_seconds": [16.0, 7.0, 7.0],
        "agent_cpu_seconds": [7.5, 2.0, 2.0],
        "sim_cpu_seconds": [15.5, 6.6, 6.7],
        "failures": [0, 0, 0],
        "requests": [3000, 1000, 1000],
        "round1_login": {"seconds": 3.0, "requests": 1000},
        "round1_first_poll": {"seconds": 13.0, "requests": 2000},
    }
    text = report._p6_miss(run)
    assert "round 1 took 16.00 s" in text and "3.00 s of logins" in text
    assert "97%" in text  # the simulator's share of round 1, from the figures
    # The same figures with a quick round 1 raise no miss for round 1.
    quick = run | {"round_seconds": [9.0, 7.0, 7.0]}
    assert "round 1" not in report._p6_miss(quick)


async def test_poll_pattern_comes_from_the_pollers_decisions() -> None:
    trace = await policy.simulate(policy.evening_session_day())
    pattern = policy.poll_pattern(trace)
    assert pattern["polls"] == len(trace.polls)
    assert all(d.outcome in {"polled", "quiet", "backoff", "budget"} for d in trace.decisions)
    assert len(pattern["budget_refusals"]) == sum(d.outcome == "budget" for d in trace.decisions)
    for double in pattern["back_to_back"]:
        assert double["after_s"] < 10


async def test_p2_words_follow_the_figures() -> None:
    figures = await policy.policy_figures(samples=20)
    figures["session_pattern"]["budget_refusals"] = []
    figures["session_pattern"]["back_to_back"] = []
    interval = figures["settings"]["active_interval"]
    gaps = figures["session_pattern"]["gap_after_active_poll_s"]
    gaps["max"] = interval
    text = report._p2_miss(figures)
    assert "refused no poll" in text and "set by `active_interval`" in text
    assert report._back_to_back_words(figures["session_pattern"]) == []
    # A refusal in the data changes the attribution; the words are not fixed.
    figures["session_pattern"]["budget_refusals"] = [
        {
            "at": "23:07:20",
            "reasons": ["active"],
            "next_poll_after_s": 1439,
            "next_poll_reasons": ["regular"],
        }
    ]
    gaps["max"] = interval + 1439
    text = report._p2_miss(figures)
    assert "refused 1 poll, the first at 23:07:20" in text
    assert "set by `active_interval`" not in text


def _p7_result(to_api_p95: float, to_reply_p95: float, nodelay: bool) -> dict[str, object]:
    def stats(p95: float) -> dict[str, float]:
        return {"n": 4, "p50": p95 / 2, "p95": p95}

    return {
        "rounds": 1,
        "broker_nodelay": nodelay,
        "ioagent_nodelay": True,
        "publish_to_api_ms": stats(to_api_p95),
        "api_to_reply_ms": stats(to_reply_p95),
        "by_command": {
            "boost off": {
                "publish_to_api_ms": stats(to_api_p95),
                "api_to_reply_ms": stats(to_reply_p95),
            }
        },
    }


def test_p7_words_follow_the_figures() -> None:
    slow, quick = _p7_result(5.0, 41.0, False), _p7_result(5.0, 2.0, True)
    text = report._p7_miss({"stock": slow, "broker_nodelay": quick})
    assert "(b) p95 is 41.0 ms, 21.0 ms over" in text and "only difference" in text
    assert "(a) p95" not in text  # (a) met the target
    text = report._p7_miss({"stock": slow, "broker_nodelay": _p7_result(25.0, 2.0, True)})
    assert "still over the target ((a) p95 25.0 ms)" in text
    assert "only difference" not in text
