"""structlog setup: JSON lines when stdout is not a terminal, pretty output on a TTY.

Every secret ioagent learns (API key, JWTs, refresh tokens, MQTT passwords) is registered with
:func:`register_secret`; a processor scrubs them from every log event, whatever field they hide in.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import threading
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import structlog

REDACTED = "***"
_MIN_SECRET_LENGTH = 6
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret so that it is scrubbed from every later log line."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Replace every registered secret inside ``text``."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(item) for item in value)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


def _redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _redact_rendered(_logger: Any, _method: str, rendered: Any) -> Any:
    # Tracebacks are rendered late; scrub the final line too.
    return redact(rendered) if isinstance(rendered, str) else rendered


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
MIN_WIDTH = 40
CONTINUATION = "    "


def visible_length(text: str) -> int:
    """Length on screen: colour escapes take no room."""
    return len(_ANSI.sub("", text))


def wrap_line(line: str, width: int) -> str:
    """Break a rendered log line at spaces so that no piece is wider than ``width``.

    Continuation lines are indented; a single word longer than the width is left whole rather
    than cut (a URL stays clickable).
    """
    if visible_length(line) <= width:
        return line
    lines: list[str] = []
    current = ""
    for word in line.split(" "):
        candidate = f"{current} {word}" if current else word
        if current and visible_length(candidate) > width:
            lines.append(current)
            current = CONTINUATION + word
        else:
            current = candidate
    lines.append(current)
    return "\n".join(lines)


def _wrapper(width: int) -> Callable[[Any, str, Any], Any]:
    def wrap(_logger: Any, _method: str, rendered: Any) -> Any:
        if not isinstance(rendered, str):
            return rendered
        return "\n".join(wrap_line(line, width) for line in rendered.split("\n"))

    return wrap


def _console_timestamp(
    clock: Callable[[], datetime] | None, label: str
) -> Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]:
    """Short times for a terminal: ``23:35:14Z``, or the given clock's, labelled."""
    suffix = f" {label}" if label else ""

    def stamp(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = clock() if clock is not None else datetime.now(UTC)
        event_dict["timestamp"] = f"{now.astimezone(UTC):%H:%M:%S}Z{suffix}"
        return event_dict

    return stamp


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    stream: Any = None,
    *,
    clock: Callable[[], datetime] | None = None,
    clock_label: str = "",
) -> None:
    """JSON lines, or pretty lines on a terminal (wrapped to its width).

    ``clock``/``clock_label``: on a terminal, stamp lines with this clock's time and the label
    (the demo's clock runs ahead of the real one); JSON lines always carry the real UTC time,
    plus ``clock_label``'s time under that name when one is given.
    """
    stream = stream if stream is not None else sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty(), pad_event_to=24, pad_level=False)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if use_json:
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
        if clock is not None and clock_label:
            processors.append(_labelled_clock(clock, f"{clock_label}_clock"))
    else:
        processors.append(_console_timestamp(clock, clock_label))
    processors.append(_redact_processor)
    if use_json:
        processors.append(structlog.processors.format_exc_info)
    processors += [renderer, _redact_rendered]
    if not use_json and stream.isatty():
        width = max(MIN_WIDTH, shutil.get_terminal_size((80, 24)).columns)
        processors.append(_wrapper(width))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def _labelled_clock(
    clock: Callable[[], datetime], label: str
) -> Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]:
    key = label.replace(" ", "_")

    def stamp(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict[key] = clock().astimezone(UTC).isoformat().replace("+00:00", "Z")
        return event_dict

    return stamp


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
