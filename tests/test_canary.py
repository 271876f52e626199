"""The suite-wide secret watch itself (tests/canary.py): it finds what it must, and only that."""

from __future__ import annotations

import pytest

from ioagent.simulator.state import DEFAULT_API_KEY
from tests import canary

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJrcmFrZW4ifQ.c2lnbmF0dXJlX2hlcmU"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("poll planned=2 api=ok", []),
        (f"login with {DEFAULT_API_KEY}", [f"a declared secret ({len(DEFAULT_API_KEY)} chars)"]),
        (f"Authorization: {JWT}", ["something shaped like a JWT"]),
        ("api_key=**********", []),
    ],
)
def test_found_in(text: str, expected: list[str]) -> None:
    assert canary.found_in(text) == expected


def test_declared_and_issued_secrets_are_found_and_never_quoted() -> None:
    password = canary.secret("pw-test-canary-0e1f")
    canary.issued("refresh-0123456789abcdef")
    found = canary.found_in(f"user=ioagent password={password} refresh=refresh-0123456789abcdef")
    assert found == [
        f"a declared secret ({len(password)} chars)",
        "an issued token (24 chars)",
    ]
    assert not any(password in description for description in found)


def test_mqtt_leaks_are_collected_once() -> None:
    canary.check_message("ioagent/A-1/api", '{"state":"ok"}')
    assert canary.take_mqtt_leaks() == []
    canary.check_message("ioagent/A-1/api", f'{{"last_error":"{DEFAULT_API_KEY}"}}')
    leaks = canary.take_mqtt_leaks()
    assert len(leaks) == 1 and "on MQTT topic ioagent/A-1/api" in leaks[0]
    assert canary.take_mqtt_leaks() == []
