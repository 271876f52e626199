"""The exceptions of the Kraken client, and the pure mapping from API errors onto them.

Callers decide what to do by exception type: back off and keep the last data
(:class:`TransientError`, :class:`RateLimited`), tell the user (:class:`CommandRefused`),
stop until the configuration changes (:class:`AuthFailed`), or report a bug/API change
(:class:`ApiChanged`). Messages never contain a secret: text from the server is passed through
:func:`ioagent.logs.redact` because validation errors can echo variables back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ioagent.logs import redact

# Error codes (extensions.errorCode) grouped by how the client reacts.
BAD_API_KEY = "KT-CT-1139"
REAUTH_CODES = frozenset({"KT-CT-1111", "KT-CT-1143", "KT-CT-1120", "KT-CT-1124"})
REFRESH_TOKEN_CODES = frozenset({"KT-CT-1134", "KT-CT-1135"})
RATE_LIMIT_CODE = "KT-CT-1199"
TRANSIENT_CODES = frozenset({"KT-CT-4340", "KT-CT-4341", "KT-CT-7899"})
BOOST_REFUSED_CODE = "KT-CT-4357"
COMMAND_REFUSED_CODES = frozenset(
    {BOOST_REFUSED_CODE, "KT-CT-4313", "KT-CT-4314", "KT-CT-4358", "KT-CT-4359", "KT-CT-4387"}
)

_MAX_SERVER_TEXT = 300


class KrakenError(Exception):
    """Any failure talking to the Kraken API. ``code`` is the errorCode or HTTP status."""

    def __init__(self, message: str, *, code: str | int | None = None) -> None:
        super().__init__(redact(message))
        self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class AuthFailed(KrakenError):
    """The API key (or a token) was refused; retrying will not help until the config changes."""


class RateLimited(KrakenError):
    """KT-CT-1199 or HTTP 429: back off and keep the last good data."""


class TransientError(KrakenError):
    """5xx, timeouts, connection errors, the CDN's HTML 403, KT-CT-4340/4341/7899."""


class ApiChanged(KrakenError):
    """The API rejected the query itself (HTTP 400): a field ioagent uses was removed or renamed."""

    def __init__(
        self, message: str, *, code: str | int | None = None, field: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.field = field


class CommandRefused(KrakenError):
    """A mutation was refused; ``reasons`` holds e.g. boostChargeRefusalReasons."""

    def __init__(
        self, message: str, *, code: str | int | None = None, reasons: Iterable[str] = ()
    ) -> None:
        super().__init__(message, code=code)
        self.reasons = tuple(reasons)


class AccountError(KrakenError):
    """The account to use cannot be decided (none visible, several, or not the configured one)."""


def server_text(value: Any) -> str:
    """A short, secret-free rendering of a message the server sent."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    if len(text) > _MAX_SERVER_TEXT:
        text = text[:_MAX_SERVER_TEXT] + "…"
    return redact(text)


def error_code(error: Mapping[str, Any]) -> str | None:
    extensions = error.get("extensions")
    if isinstance(extensions, Mapping):
        code = extensions.get("errorCode")
        if isinstance(code, str):
            return code
    return None


def error_path_key(error: Mapping[str, Any]) -> str | None:
    """The top-level response key an error belongs to (``path[0]``), if it names one."""
    path = error.get("path")
    if isinstance(path, list) and path and isinstance(path[0], str):
        return path[0]
    return None


_FIELD_PATTERNS = (
    re.compile(r"Cannot query field ['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]"),
    re.compile(r"Unknown argument ['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]"),
    re.compile(r"[Ff]ield ['\"]([A-Za-z_][A-Za-z0-9_.]*)['\"]"),
    re.compile(r"Unknown type ['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]"),
)


def field_from_message(message: str) -> str | None:
    """The field a schema-validation message complains about, e.g. from "Cannot query field 'x'"."""
    for pattern in _FIELD_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None


def schema_error(errors: Iterable[Any], status: int) -> ApiChanged:
    """HTTP 400 from the API: the query no longer matches the schema."""
    messages = [
        server_text(error.get("message", ""))
        for error in errors
        if isinstance(error, Mapping) and error.get("message")
    ]
    field = next((f for f in map(field_from_message, messages) if f), None)
    detail = "; ".join(messages[:3]) or "no message"
    named = f" (field {field!r})" if field else ""
    return ApiChanged(
        f"Kraken API rejected the query{named}; the API may have changed: {detail}",
        code=status,
        field=field,
    )


def _refusal_reasons(error: Mapping[str, Any]) -> list[str]:
    extensions = error.get("extensions")
    if not isinstance(extensions, Mapping):
        return []
    reasons = extensions.get("boostChargeRefusalReasons")
    if isinstance(reasons, str):
        return [reasons]
    if isinstance(reasons, list):
        return [str(reason) for reason in reasons if reason is not None]
    return []


def classify_error(error: Mapping[str, Any]) -> KrakenError:
    """Map one GraphQL error object onto the exception hierarchy."""
    code = error_code(error)
    text = server_text(error.get("message") or "no message")
    where = error_path_key(error)
    located = f" ({where})" if where else ""
    label = f"{code}: " if code else ""
    message = f"Kraken API error{located}: {label}{text}"
    if code == BAD_API_KEY or code in REFRESH_TOKEN_CODES or code in REAUTH_CODES:
        return AuthFailed(message, code=code)
    if code == RATE_LIMIT_CODE:
        return RateLimited(message, code=code)
    if code in TRANSIENT_CODES:
        return TransientError(message, code=code)
    if code in COMMAND_REFUSED_CODES:
        return CommandRefused(message, code=code, reasons=_refusal_reasons(error))
    return KrakenError(message, code=code)
