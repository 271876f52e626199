"""Turn an MQTT command message into a validated :class:`Command` or a :class:`CommandRejection`.

Pure: no I/O, no clock reads. The bridge supplies the topic's last segment as ``name``, the raw
payload, the retain flag and the message age; the daemon acts on a :class:`Command` and
publishes ``reply_json`` of either result.

Payloads are a bare value (``80``, ``"80"``, ``on``, ``07:30``) or a JSON object
``{"value": …, "transaction": "…", "device_id": "…"}``. The same envelope rules apply to every
command; ``refresh`` and ``resync`` ignore the value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any, Literal

MAX_PAYLOAD_BYTES = 1024
MAX_TRANSACTION_LENGTH = 128
MIN_TARGET_SOC = 10
MAX_TARGET_SOC = 100
EARLIEST_READY_BY = time(4, 0)
LATEST_READY_BY = time(11, 0)
READY_BY_STEP_MINUTES = 30

VALUE_COMMANDS = ("target_soc", "ready_by", "smart_control", "boost")
"""Commands whose payload must carry a value."""
DEVICE_COMMANDS = (*VALUE_COMMANDS, "resync")
"""Commands that act on one device and so must name it when the account has several."""
KNOWN_COMMANDS = (*DEVICE_COMMANDS, "refresh")

RETAINED_REASON = "retained commands are never acted on"
STALE_REASON = "stale command"

_ENVELOPE_KEYS = frozenset({"value", "transaction", "device_id"})
_TRUE_WORDS = frozenset({"on", "true"})
_FALSE_WORDS = frozenset({"off", "false"})
_READY_BY_PATTERN = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?")
# ASCII digits only: int() alone would also take "8_0" and non-Latin digits.
_NUMBER_PATTERN = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_MAX_NAME_IN_MESSAGE = 64

CommandValue = int | time | bool | None
ReplyStatus = Literal["ok", "error"]


def _reply_json(name: str, status: ReplyStatus, error: str | None, transaction: str | None) -> str:
    reply: dict[str, str] = {"command": name, "status": status}
    if error is not None:
        reply["error"] = error
    if transaction is not None:
        reply["transaction"] = transaction
    return json.dumps(reply, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Command:
    """A command that passed every check; ``value`` is normalised for its ``name``.

    ``target_soc`` -> int, ``ready_by`` -> :class:`datetime.time`, ``smart_control``/``boost``
    -> bool, ``refresh``/``resync`` -> None. ``device_id`` is the device to act on (the only one
    when the account has a single device), or None for ``refresh`` when none was named.
    """

    name: str
    value: CommandValue
    device_id: str | None
    received_at: datetime
    transaction: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = field(default=None, repr=False)

    def reply_json(self, status: ReplyStatus, error: str | None = None) -> str:
        return _reply_json(self.name, status, error, self.transaction)


@dataclass(frozen=True, slots=True)
class CommandRejection:
    """A command that will not be run; ``reason`` is meant for the user."""

    name: str
    reason: str
    transaction: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = field(default=None, repr=False)

    def reply_json(self, status: ReplyStatus = "error", error: str | None = None) -> str:
        """The reply; by default the error reply that carries ``reason``."""
        if status == "error" and error is None:
            error = self.reason
        return _reply_json(self.name, status, error, self.transaction)


class _Invalid(Exception):
    """A payload problem; the message is shown to the user."""


@dataclass(frozen=True, slots=True)
class _Envelope:
    value: Any
    transaction: str | None
    device_id: str | None
    has_value: bool


def _reject_non_finite(constant: str) -> Any:
    raise ValueError(f"{constant} is not a number")


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_non_finite)


def _parse_transaction(raw: Any) -> str:
    if (
        isinstance(raw, bool)
        or not isinstance(raw, str | int | float)
        or (isinstance(raw, float) and not math.isfinite(raw))
    ):
        raise _Invalid("transaction must be a string or a number")
    if isinstance(raw, str):
        if len(raw) > MAX_TRANSACTION_LENGTH:
            raise _Invalid(f"transaction must be at most {MAX_TRANSACTION_LENGTH} characters")
        return raw
    text = str(raw)
    if len(text) > MAX_TRANSACTION_LENGTH:
        raise _Invalid(f"transaction must be at most {MAX_TRANSACTION_LENGTH} characters")
    return text


def _parse_envelope(payload: bytes) -> _Envelope:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _Invalid(f"payload is larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _Invalid("payload is not valid UTF-8 text") from None
    if not text:
        return _Envelope(None, None, None, has_value=False)
    try:
        parsed = _loads(text)
    except (ValueError, RecursionError):
        if text.startswith("{"):
            raise _Invalid("payload starts with '{' but is not valid JSON") from None
        return _Envelope(text, None, None, has_value=True)
    if not isinstance(parsed, dict):
        return _Envelope(parsed, None, None, has_value=True)
    unknown = sorted(set(parsed) - _ENVELOPE_KEYS)
    if unknown:
        raise _Invalid(
            f"unknown JSON key(s) {', '.join(map(repr, unknown))}; "
            "allowed: 'value', 'transaction', 'device_id'"
        )
    device_id = parsed.get("device_id")
    if device_id is not None and not isinstance(device_id, str):
        raise _Invalid("device_id must be a string")
    transaction = parsed.get("transaction")
    return _Envelope(
        parsed.get("value"),
        None if transaction is None else _parse_transaction(transaction),
        device_id,
        has_value="value" in parsed,
    )


def _transaction_only(payload: bytes) -> str | None:
    """Best-effort transaction for replies to payloads that fail other checks."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        parsed = _loads(payload.decode("utf-8"))
        return _parse_transaction(parsed["transaction"])
    except (ValueError, RecursionError, TypeError, KeyError, _Invalid):
        return None


def _is_integral_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _parse_target_soc(value: Any) -> int:
    number: Any = value
    if isinstance(value, str):
        text = value.strip()
        if not _NUMBER_PATTERN.fullmatch(text):
            raise _Invalid(f"target_soc must be a whole number of percent, got {value!r}")
        number = float(text) if "." in text else int(text)
    if not _is_integral_number(number):
        raise _Invalid(f"target_soc must be a whole number of percent, got {value!r}")
    soc = int(number)
    if not MIN_TARGET_SOC <= soc <= MAX_TARGET_SOC:
        raise _Invalid(f"target_soc must be between {MIN_TARGET_SOC} and {MAX_TARGET_SOC}")
    return soc


def _allowed_ready_by_text() -> str:
    return (
        f"{EARLIEST_READY_BY:%H:%M}-{LATEST_READY_BY:%H:%M} in {READY_BY_STEP_MINUTES}-minute steps"
    )


def _parse_ready_by(value: Any) -> time:
    match = _READY_BY_PATTERN.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise _Invalid(f"ready_by must be a time written HH:MM, got {value!r}")
    hour, minute = int(match[1]), int(match[2])
    second = int(match[3]) if match[3] is not None else 0
    if hour > 23 or minute > 59 or second > 59:
        raise _Invalid(f"ready_by must be a valid time of day, got {value!r}")
    if second != 0:
        raise _Invalid("ready_by must be a whole minute (seconds :00)")
    ready_by = time(hour, minute)
    if not EARLIEST_READY_BY <= ready_by <= LATEST_READY_BY or minute % READY_BY_STEP_MINUTES != 0:
        raise _Invalid(f"ready_by must be {_allowed_ready_by_text()}, got {value!r}")
    return ready_by


def _parse_switch(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise _Invalid(f"{name} must be on/off or true/false, got {value!r}")


def _parse_value(name: str, envelope: _Envelope) -> CommandValue:
    if name not in VALUE_COMMANDS:
        return None
    if not envelope.has_value or envelope.value is None:
        raise _Invalid(f"{name} needs a value")
    if name == "target_soc":
        return _parse_target_soc(envelope.value)
    if name == "ready_by":
        return _parse_ready_by(envelope.value)
    return _parse_switch(name, envelope.value)


def _resolve_device(name: str, requested: str | None, device_ids: Sequence[str]) -> str | None:
    if requested is not None:
        if requested not in device_ids:
            known = ", ".join(device_ids) if device_ids else "none known yet"
            raise _Invalid(f"unknown device_id {requested!r}; devices: {known}")
        return requested
    if name not in DEVICE_COMMANDS:
        return None
    if len(device_ids) == 1:
        return device_ids[0]
    if not device_ids:
        raise _Invalid("no smart-charging device is known yet; try again after a refresh")
    raise _Invalid(
        f"the account has several devices; name one with device_id: {', '.join(device_ids)}"
    )


def parse_command(
    name: str,
    payload: bytes,
    *,
    retained: bool,
    now: datetime,
    message_age: float | None,
    max_age: float,
    device_ids: Sequence[str],
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
) -> Command | CommandRejection:
    """Validate one command message. Never raises for any name or payload.

    ``message_age`` is seconds since the message reached ioagent (``math.inf`` when its MQTT v5
    expiry has passed, None when unknown); a command older than ``max_age`` is stale.
    """

    def reject(reason: str, transaction: str | None) -> CommandRejection:
        return CommandRejection(name, reason, transaction, response_topic, correlation_data)

    try:
        envelope = _parse_envelope(payload)
    except _Invalid as exc:
        envelope_error: str | None = str(exc)
        transaction = _transaction_only(payload)
    else:
        envelope_error = None
        transaction = envelope.transaction

    if name not in KNOWN_COMMANDS:
        shown = name if len(name) <= _MAX_NAME_IN_MESSAGE else name[:_MAX_NAME_IN_MESSAGE] + "…"
        return reject(f"unknown command {shown!r}; known: {', '.join(KNOWN_COMMANDS)}", transaction)
    if retained:
        return reject(RETAINED_REASON, transaction)
    if message_age is not None and message_age > max_age:
        return reject(STALE_REASON, transaction)
    if envelope_error is not None:
        return reject(envelope_error, transaction)
    try:
        value = _parse_value(name, envelope)
        device_id = _resolve_device(name, envelope.device_id, device_ids)
    except _Invalid as exc:
        return reject(str(exc), transaction)
    return Command(
        name=name,
        value=value,
        device_id=device_id,
        received_at=now,
        transaction=transaction,
        response_topic=response_topic,
        correlation_data=correlation_data,
    )
