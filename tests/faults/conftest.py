"""Fixtures of the fault suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Broker


def run_as_root_option() -> list[str]:
    """As root, Mosquitto drops to user "mosquitto", who cannot write to pytest's private
    temp dirs (its log, a password file): keep it root there."""
    return ["user root"] if os.geteuid() == 0 else []


@pytest.fixture
def logged_broker(tmp_path: Path) -> Iterator[Broker]:
    """Like ``broker``, but Mosquitto can write its log, so tests can read what it saw."""
    instance = Broker(workdir=tmp_path / "mosquitto", extra_config=run_as_root_option())
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
