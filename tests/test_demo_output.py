"""What the demo prints fits an 80-column SSH terminal and says which clock it runs on."""

from __future__ import annotations

import argparse
import io
import json
import re
from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from ioagent.demo import banner
from ioagent.kraken.client import PollResult
from ioagent.kraken.types import SMART, Dispatch
from ioagent.logs import configure_logging, get_logger, visible_length, wrap_line
from ioagent.simulator.server import RunningSimulator
from tests.test_agent import TOPICS, RecordingPublisher, offline_agent


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _args(host: str = "localhost", port: int = 1883) -> argparse.Namespace:
    return argparse.Namespace(mqtt_host=host, mqtt_port=port, base_topic="ioagent")


def test_the_banner_fits_80_columns_and_says_how_to_stop(simulator: RunningSimulator) -> None:
    for demo_now in (None, datetime(2026, 12, 2, 18, 1, tzinfo=UTC)):
        text = banner(simulator, _args(port=65535), demo_now)
        assert "Ctrl-C to stop" in text
        too_wide = [line for line in text.splitlines() if len(line) > 80]
        assert too_wide == []
    shifted = banner(simulator, _args(), datetime(2026, 12, 2, 18, 1, tzinfo=UTC))
    assert "Demo clock:    Wed 18:01 UK time" in shifted
    assert "log lines marked 'demo'" in shifted
    # Another host must be named, or mosquitto_sub would go to localhost.
    assert "mosquitto_sub -h broker.lan -p 1884 -v" in banner(
        simulator, _args("broker.lan", 1884), None
    )


def test_wrapping_keeps_every_piece_within_the_width_and_loses_nothing() -> None:
    line = "18:01:10Z demo [info] poll " + " ".join(f"key{n}=value{n}" for n in range(30))
    wrapped = wrap_line(line, 80)
    assert all(visible_length(piece) <= 80 for piece in wrapped.splitlines())
    assert wrapped.split() == line.split()
    assert all(piece.startswith("    ") for piece in wrapped.splitlines()[1:])
    coloured = "\x1b[2m18:01:10Z\x1b[0m " + "x" * 70 + " " + "y" * 10
    assert wrap_line(coloured, 91) == coloured, "colour escapes take no room"
    url = "u" * 100
    assert wrap_line(url, 80) == url, "one long word is not cut"


def test_pretty_log_lines_on_a_terminal_are_wrapped_and_stamped_with_the_demo_clock() -> None:
    stream = _Tty()
    demo_now = datetime(2026, 12, 2, 18, 1, 5, tzinfo=UTC)
    configure_logging("info", "console", stream=stream, clock=lambda: demo_now, clock_label="demo")
    try:
        get_logger("test").info(
            "poll", account="A-SIM00001", changes="added SMART 18:02-18:19Z; " * 5, api="ok"
        )
    finally:
        configure_logging("info", "json")
    lines = stream.getvalue().splitlines()
    assert re.sub(r"\x1b\[[0-9;]*m", "", lines[0]).startswith("18:01:05Z demo")
    assert len(lines) > 1
    assert all(visible_length(line) <= 80 for line in lines), lines


def test_json_logs_keep_the_real_time_and_add_the_demo_clock() -> None:
    stream = io.StringIO()
    demo_now = datetime(2026, 12, 2, 18, 1, 5, tzinfo=UTC)
    configure_logging("info", "json", stream=stream, clock=lambda: demo_now, clock_label="demo")
    try:
        get_logger("test").info("poll")
    finally:
        configure_logging("info", "json")
    text = stream.getvalue()
    assert '"demo_clock": "2026-12-02T18:01:05Z"' in text
    assert '"timestamp": "2026-12-02T18:01:05' not in text


async def test_the_logged_planned_count_is_the_published_one() -> None:
    now = datetime(2026, 11, 23, 19, 40, tzinfo=UTC)
    publisher = RecordingPublisher()
    agent = offline_agent(publisher, None, now)
    finished = Dispatch(now - timedelta(hours=2), now - timedelta(hours=1), SMART, 2.0, "dev-1")
    upcoming = Dispatch(now + timedelta(hours=1), now + timedelta(hours=2), SMART, 2.0, "dev-1")
    await agent.apply(PollResult(devices=None, planned={"dev-1": [finished]}, completed=[]), now)
    with capture_logs() as logs:
        await agent.apply(
            PollResult(devices=None, planned={"dev-1": [finished, upcoming]}, completed=[]), now
        )
    await agent.client.close()
    (poll,) = [entry for entry in logs if entry["event"] == "poll"]
    published = json.loads(publisher.retained[TOPICS.planned])
    assert poll["planned"] == len(published) == 1
