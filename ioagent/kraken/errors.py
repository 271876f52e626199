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
DISABLED_FIELD_CODE = "KT-CT-1113"
"""A field Octopus switched off: the query no longer works, like a schema HTTP 400."""

_MAX_SERVER_TEXT = 300


class KrakenError(Exception):
    """Any failure talking to the Kraken API. ``code`` is the errorCode or HTTP status.

    The message already carries Kraken's ``errorDescription`` when there was one;
    ``description`` keeps it on its own as well.
    """

    def __init__(
        self, message: str, *, code: str | int | None = None, description: str | None = None
    ) -> None:
        super().__init__(redact(message))
        self.code = code
        self.description = redact(description) if description else None

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
        self,
        message: str,
        *,
        code: str | int | None = None,
        field: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(message, code=code, description=description)
        self.field = field


class CommandRefused(KrakenError):
    """A mutation was refused; ``reasons`` holds e.g. boostChargeRefusalReasons."""

    def __init__(
        self,
        message: str,
        *,
        code: str | int | None = None,
        reasons: Iterable[str] = (),
        description: str | None = None,
    ) -> None:
        super().__init__(message, code=code, description=description)
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


def error_description(error: Mapping[str, Any]) -> str | None:
    """Kraken's ``extensions.errorDescription`` (the readable text), shortened and secret-free;
    None when the error has none or an empty one."""
    extensions = error.get("extensions")
    if isinstance(extensions, Mapping):
        description = extensions.get("errorDescription")
        if isinstance(description, str) and description.strip():
            return server_text(description)
    return None


def error_text(error: Mapping[str, Any]) -> str:
    """``message`` followed by ``errorDescription`` when it adds something.

    Kraken's ``message`` is often just "Invalid data."; the description says what was wrong.
    """
    message = server_text(error.get("message") or "no message")
    description = error_description(error)
    if description is None or description == message:
        return message
    if message.endswith((".", "!", "?")):
        return f"{message} {description}"
    return f"{message}: {description}"


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
    usable = [error for error in errors if isinstance(error, Mapping) and error.get("message")]
    messages = [error_text(error) for error in usable]
    field = next(
        (f for f in (field_from_message(server_text(e["message"])) for e in usable) if f), None
    )
    detail = "; ".join(messages[:3]) or "no message"
    named = f" (field {field!r})" if field else ""
    descriptions = [d for d in map(error_description, usable) if d]
    return ApiChanged(
        f"Kraken API rejected the query{named}; the API may have changed: {detail}",
        code=status,
        field=field,
        description=descriptions[0] if descriptions else None,
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
    """Map one GraphQL error object onto the exception hierarchy.

    Boost refusal reasons are read whatever the code: Octopus documents them with KT-CT-4357,
    but a refusal that lists reasons under another code is still a refusal with reasons.
    """
    code = error_code(error)
    description = error_description(error)
    where = error_path_key(error)
    located = f" ({where})" if where else ""
    label = f"{code}: " if code else ""
    message = f"Kraken API error{located}: {label}{error_text(error)}"
    if code == BAD_API_KEY or code in REFRESH_TOKEN_CODES or code in REAUTH_CODES:
        return AuthFailed(message, code=code, description=description)
    if code == RATE_LIMIT_CODE:
        return RateLimited(message, code=code, description=description)
    if code in TRANSIENT_CODES:
        return TransientError(message, code=code, description=description)
    if code == DISABLED_FIELD_CODE:
        return ApiChanged(
            f"{message}; Octopus switched this field off, the API has changed",
            code=code,
            field=where,
            description=description,
        )
    reasons = _refusal_reasons(error)
    if code in COMMAND_REFUSED_CODES or reasons:
        return CommandRefused(message, code=code, reasons=reasons, description=description)
    return KrakenError(message, code=code, description=description)
