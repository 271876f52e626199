"""Suite-wide secret watch: no test may see a secret in its output or on an MQTT topic.

Every test's captured stdout, stderr and log records are searched after it runs (see
``pytest_runtest_makereport`` in ``tests/conftest.py``), and so is every MQTT message a
:class:`tests.harness.Watcher` receives. The secrets are the simulator's API keys, each JWT and
refresh token an in-process simulator issues during the test, and every password a test module
declares with :func:`secret`.
"""

from __future__ import annotations

import re

from ioagent.simulator.state import DEFAULT_API_KEY, SECOND_API_KEY

_declared: set[str] = {DEFAULT_API_KEY, SECOND_API_KEY}
_issued: set[str] = set()
_mqtt_leaks: list[str] = []

JWT_SHAPE = re.compile(r"eyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]{10,}")
"""Any JWT at all: the daemon has no reason ever to show one."""


def secret(value: str) -> str:
    """Declare ``value`` (a password a test uses) as a secret to watch for; returns it."""
    _declared.add(value)
    return value


def issued(*values: str) -> None:
    """Tokens a simulator handed out: secrets for the rest of the run."""
    _issued.update(v for v in values if v)


def found_in(text: str) -> list[str]:
    """A short description of each secret in ``text`` (never the secret itself)."""
    if not text:
        return []
    found = [f"a declared secret ({len(s)} chars)" for s in _declared if s in text]
    found += [f"an issued token ({len(s)} chars)" for s in _issued if s in text]
    if JWT_SHAPE.search(text):
        found.append("something shaped like a JWT")
    return sorted(set(found))


def check_message(topic: str, payload: str) -> None:
    for leak in found_in(f"{topic}\n{payload}"):
        _mqtt_leaks.append(f"{leak} on MQTT topic {topic}")


def take_mqtt_leaks() -> list[str]:
    leaks = list(_mqtt_leaks)
    _mqtt_leaks.clear()
    return leaks
