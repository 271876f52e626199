from __future__ import annotations

import json
from datetime import UTC, datetime, time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioagent.mqtt.commands import (
    KNOWN_COMMANDS,
    RETAINED_REASON,
    STALE_REASON,
    Command,
    CommandRejection,
    parse_command,
)

NOW = datetime(2025, 1, 15, 21, 0, tzinfo=UTC)
ONE_DEVICE = ("dev-1",)
TWO_DEVICES = ("dev-1", "dev-2")


def parse(
    name: str,
    payload: bytes | str,
    *,
    retained: bool = False,
    message_age: float | None = 0.5,
    max_age: float = 60.0,
    device_ids: tuple[str, ...] = ONE_DEVICE,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
) -> Command | CommandRejection:
    raw = payload.encode() if isinstance(payload, str) else payload
    return parse_command(
        name,
        raw,
        retained=retained,
        now=NOW,
        message_age=message_age,
        max_age=max_age,
        device_ids=device_ids,
        response_topic=response_topic,
        correlation_data=correlation_data,
    )


def accepted(result: Command | CommandRejection) -> Command:
    assert isinstance(result, Command), result
    return result


def rejected(result: Command | CommandRejection) -> CommandRejection:
    assert isinstance(result, CommandRejection), result
    return result


GOOD = [
    ("target_soc", "80", 80),
    ("target_soc", " 80 \n", 80),
    ("target_soc", "80.0", 80),
    ("target_soc", '"80"', 80),
    ("target_soc", '"80.0"', 80),
    ("target_soc", "10", 10),
    ("target_soc", "100", 100),
    ("target_soc", "1e2", 100),
    ("target_soc", '{"value": 75}', 75),
    ("target_soc", '{"value": 75.0}', 75),
    ("target_soc", '{"value": "65"}', 65),
    ("ready_by", "07:30", time(7, 30)),
    ("ready_by", "04:00", time(4, 0)),
    ("ready_by", "11:00", time(11, 0)),
    ("ready_by", "4:30", time(4, 30)),
    ("ready_by", "08:00:00", time(8, 0)),
    ("ready_by", '"09:30"', time(9, 30)),
    ("ready_by", '{"value": "06:00"}', time(6, 0)),
    ("smart_control", "on", True),
    ("smart_control", "OFF", False),
    ("smart_control", "True", True),
    ("smart_control", "false", False),
    ("smart_control", "true", True),
    ("smart_control", '"On"', True),
    ("smart_control", '{"value": false}', False),
    ("smart_control", '{"value": "ON"}', True),
    ("boost", "on", True),
    ("boost", "Off", False),
    ("boost", "TRUE", True),
    ("boost", '{"value": true}', True),
    ("refresh", "", None),
    ("refresh", "PRESS", None),
    ("refresh", "anything at all", None),
    ("refresh", "[1, 2]", None),
    ("refresh", '{"transaction": "t"}', None),
    ("resync", "", None),
    ("resync", "go", None),
]


@pytest.mark.parametrize(("name", "payload", "expected"), GOOD)
def test_good_payloads_are_normalised(name: str, payload: str, expected: object) -> None:
    command = accepted(parse(name, payload))
    assert command.name == name
    assert command.value == expected
    assert type(command.value) is type(expected)
    assert command.received_at == NOW


BAD = [
    ("target_soc", "", "target_soc needs a value"),
    ("target_soc", "{}", "target_soc needs a value"),
    ("target_soc", '{"value": null}', "target_soc needs a value"),
    ("target_soc", "9", "between 10 and 100"),
    ("target_soc", "101", "between 10 and 100"),
    ("target_soc", "0", "between 10 and 100"),
    ("target_soc", "-50", "between 10 and 100"),
    ("target_soc", '"-50"', "whole number"),
    ("target_soc", "80.5", "whole number"),
    ("target_soc", "eighty", "whole number"),
    ("target_soc", "8_0", "whole number"),
    ("target_soc", "٨٠", "whole number"),
    ("target_soc", '"1e2"', "whole number"),
    ("target_soc", "true", "whole number"),
    ("target_soc", "NaN", "whole number"),
    ("target_soc", "Infinity", "whole number"),
    ("target_soc", "1e400", "whole number"),
    ("target_soc", "[80]", "whole number"),
    ("target_soc", '{"value": [80]}', "whole number"),
    ("target_soc", '{"value": 80, "deviceId": "x"}', "unknown JSON key(s) 'deviceId'"),
    ("target_soc", '{"value": 80,', "not valid JSON"),
    ("ready_by", "07:15", "04:00-11:00 in 30-minute steps"),
    ("ready_by", "03:30", "04:00-11:00 in 30-minute steps"),
    ("ready_by", "11:30", "04:00-11:00 in 30-minute steps"),
    ("ready_by", "23:00", "04:00-11:00 in 30-minute steps"),
    ("ready_by", "07:30:15", "whole minute"),
    ("ready_by", "25:00", "valid time of day"),
    ("ready_by", "07:60", "valid time of day"),
    ("ready_by", "0730", "HH:MM"),
    ("ready_by", "7.5", "HH:MM"),
    ("ready_by", "07:30Z", "HH:MM"),
    ("ready_by", "", "ready_by needs a value"),
    ("smart_control", "yes", "on/off or true/false"),
    ("smart_control", "1", "on/off or true/false"),
    ("smart_control", "", "smart_control needs a value"),
    ("boost", "maybe", "on/off or true/false"),
    ("boost", '{"value": 1}', "on/off or true/false"),
    ("boost", '{"value": true, "transaction": true}', "transaction must be a string or a number"),
    ("boost", '{"value": true, "transaction": ["x"]}', "transaction must be a string or a number"),
    ("boost", json.dumps({"value": "on", "transaction": "x" * 129}), "at most 128 characters"),
    ("boost", '{"value": "on", "device_id": 7}', "device_id must be a string"),
    ("boost", b"\xff\xfeon", "not valid UTF-8"),
    ("boost", b"o" * 1025, "larger than 1024 bytes"),
    ("refresh", b"\x80", "not valid UTF-8"),
    ("refresh", '{"foo": 1}', "unknown JSON key(s) 'foo'"),
    ("launch", "now", "unknown command 'launch'"),
    ("", "on", "unknown command ''"),
]


@pytest.mark.parametrize(("name", "payload", "reason_part"), BAD)
def test_bad_payloads_are_rejected_with_a_clear_reason(
    name: str, payload: str | bytes, reason_part: str
) -> None:
    rejection = rejected(parse(name, payload))
    assert reason_part in rejection.reason
    assert rejection.name == name


def test_exactly_one_kib_is_still_accepted() -> None:
    payload = b"on" + b" " * 1022
    assert len(payload) == 1024
    assert accepted(parse("boost", payload)).value is True


@pytest.mark.parametrize("name", KNOWN_COMMANDS)
def test_retained_commands_are_refused_whatever_the_payload(name: str) -> None:
    rejection = rejected(parse(name, "on", retained=True))
    assert rejection.reason == RETAINED_REASON


@pytest.mark.parametrize(
    ("message_age", "max_age", "fresh"),
    [
        (None, 60.0, True),
        (0.0, 60.0, True),
        (60.0, 60.0, True),
        (60.5, 60.0, False),
        (float("inf"), 3600.0, False),
        (0.1, 0.0, False),
        (0.0, 0.0, True),
    ],
)
def test_stale_commands_are_refused(message_age: float | None, max_age: float, fresh: bool) -> None:
    result = parse("boost", "on", message_age=message_age, max_age=max_age)
    if fresh:
        accepted(result)
    else:
        assert rejected(result).reason == STALE_REASON


def test_retained_check_comes_before_the_payload_check() -> None:
    assert rejected(parse("target_soc", "999", retained=True)).reason == RETAINED_REASON


DEVICE_CASES: list[tuple[str, str, tuple[str, ...], str | None, str | None]] = [
    # name, payload, device_ids, expected device, expected rejection fragment
    ("boost", "on", ONE_DEVICE, "dev-1", None),
    ("boost", '{"value": "on", "device_id": "dev-1"}', ONE_DEVICE, "dev-1", None),
    ("boost", '{"value": "on", "device_id": "dev-9"}', ONE_DEVICE, None, "unknown device_id"),
    ("boost", "on", TWO_DEVICES, None, "several devices; name one with device_id: dev-1, dev-2"),
    ("target_soc", '{"value": 80, "device_id": "dev-2"}', TWO_DEVICES, "dev-2", None),
    ("resync", "", TWO_DEVICES, None, "several devices"),
    ("resync", '{"device_id": "dev-1"}', TWO_DEVICES, "dev-1", None),
    ("refresh", "", TWO_DEVICES, None, None),
    ("refresh", "", (), None, None),
    ("refresh", '{"device_id": "dev-3"}', TWO_DEVICES, None, "unknown device_id 'dev-3'"),
    ("smart_control", "on", (), None, "no smart-charging device is known yet"),
]


@pytest.mark.parametrize(("name", "payload", "device_ids", "device", "reason_part"), DEVICE_CASES)
def test_device_resolution(
    name: str,
    payload: str,
    device_ids: tuple[str, ...],
    device: str | None,
    reason_part: str | None,
) -> None:
    result = parse(name, payload, device_ids=device_ids)
    if reason_part is None:
        assert accepted(result).device_id == device
    else:
        assert reason_part in rejected(result).reason


@pytest.mark.parametrize(
    ("payload", "transaction"),
    [
        ('{"value": 80, "transaction": "abc-1"}', "abc-1"),
        ('{"value": 80, "transaction": 42}', "42"),
        ('{"value": 80, "transaction": 1.5}', "1.5"),
        ('{"value": 80, "transaction": ""}', ""),
        (json.dumps({"value": 80, "transaction": "x" * 128}), "x" * 128),
        ("80", None),
    ],
)
def test_transaction_is_echoed(payload: str, transaction: str | None) -> None:
    command = accepted(parse("target_soc", payload))
    assert command.transaction == transaction
    reply = json.loads(command.reply_json("ok"))
    assert reply.get("transaction") == transaction


def test_rejections_keep_the_transaction_for_the_reply() -> None:
    rejection = rejected(parse("target_soc", '{"value": 5, "transaction": "t-7"}'))
    assert rejection.transaction == "t-7"
    rejection = rejected(parse("target_soc", '{"value": 80, "bogus": 1, "transaction": "t-8"}'))
    assert rejection.transaction == "t-8"
    assert rejected(parse("target_soc", '{"transaction": "t-9"}', retained=True)).transaction == (
        "t-9"
    )


def test_v5_reply_fields_are_carried_through() -> None:
    command = accepted(
        parse("boost", "on", response_topic="me/reply", correlation_data=b"\x01\x02")
    )
    assert (command.response_topic, command.correlation_data) == ("me/reply", b"\x01\x02")
    rejection = rejected(parse("boost", "bad", response_topic="me/reply", correlation_data=b"c"))
    assert (rejection.response_topic, rejection.correlation_data) == ("me/reply", b"c")


REPLIES: list[tuple[Command | CommandRejection, tuple[Any, ...], str]] = [
    (
        Command("target_soc", 80, "dev-1", NOW),
        ("ok",),
        '{"command":"target_soc","status":"ok"}',
    ),
    (
        Command("target_soc", 80, "dev-1", NOW, transaction="t1"),
        ("ok",),
        '{"command":"target_soc","status":"ok","transaction":"t1"}',
    ),
    (
        Command("boost", True, "dev-1", NOW, transaction="t2"),
        ("error", "Octopus refused: device not at home"),
        '{"command":"boost","status":"error","error":"Octopus refused: device not at home",'
        '"transaction":"t2"}',
    ),
    (
        CommandRejection("boost", "stale command"),
        (),
        '{"command":"boost","status":"error","error":"stale command"}',
    ),
    (
        CommandRejection("ready_by", "bad", transaction='t"3'),
        ("error", "other"),
        '{"command":"ready_by","status":"error","error":"other","transaction":"t\\"3"}',
    ),
]


@pytest.mark.parametrize(("result", "args", "expected"), REPLIES)
def test_reply_json_format(
    result: Command | CommandRejection, args: tuple[Any, ...], expected: str
) -> None:
    assert result.reply_json(*args) == expected


def test_correlation_data_is_not_in_repr() -> None:
    command = Command("boost", True, "dev-1", NOW, correlation_data=b"secret-ish")
    assert "secret-ish" not in repr(command)


@given(
    name=st.one_of(st.sampled_from(KNOWN_COMMANDS), st.text(max_size=80)),
    payload=st.one_of(
        st.binary(max_size=1100),
        st.text(max_size=300).map(str.encode),
        st.builds(
            lambda value, transaction, device: json.dumps(
                {"value": value, "transaction": transaction, "device_id": device}
            ).encode(),
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
            st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=200)),
            st.one_of(st.none(), st.sampled_from(TWO_DEVICES), st.text(max_size=5)),
        ),
        st.integers(min_value=1, max_value=1100).map(lambda depth: b"[" * depth),
    ),
    retained=st.booleans(),
    message_age=st.one_of(st.none(), st.floats(allow_nan=False)),
    device_ids=st.sampled_from([(), ONE_DEVICE, TWO_DEVICES]),
)
def test_parse_command_never_raises(
    name: str,
    payload: bytes,
    retained: bool,
    message_age: float | None,
    device_ids: tuple[str, ...],
) -> None:
    result = parse(name, payload, retained=retained, message_age=message_age, device_ids=device_ids)
    reply = json.loads(result.reply_json("error", "x"))
    assert reply["command"] == name
    if isinstance(result, Command):
        assert name in KNOWN_COMMANDS
        assert not retained
