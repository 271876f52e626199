"""Ctrl-C on the demo stops it as cleanly as ``ioagent run``: one ``offline``, no traceback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.broker import Broker, free_port
from tests.harness import watching

ROOT = Path(__file__).resolve().parent.parent


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.mark.timeout(120)
async def test_ctrl_c_on_the_demo_with_its_private_broker_is_clean(tmp_path: Path) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ioagent",
        "demo",
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-port",
        str(port),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # a process group of its own, as a terminal's job is
    )
    try:
        async with asyncio.timeout(30):
            while not listening(port):
                await asyncio.sleep(0.1)
        demo_broker = Broker(workdir=tmp_path, port=port)  # the demo's own; only its address
        async with watching(demo_broker, "ioagent/#") as watcher:
            await watcher.wait_for("ioagent/A-SIM00001/api", timeout=40)
            # What Ctrl-C in a terminal does: SIGINT to every process of the foreground job.
            os.killpg(process.pid, signal.SIGINT)
            async with asyncio.timeout(20):
                output, _ = await process.communicate()
            statuses = [m.payload for m in watcher.messages if m.topic.endswith("status")]
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    text = output.decode()
    assert process.returncode == 0, text
    assert "Traceback" not in text and "never retrieved" not in text, text
    assert statuses.count("offline") == 1, statuses
