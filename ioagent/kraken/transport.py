"""HTTP for the Kraken GraphQL endpoint: one session, timeouts, errors mapped to exceptions.

The transport raises only when a response carries nothing usable. A response with data *and*
errors (partial success) comes back as a :class:`GraphQLResult` so callers can keep the parts
that worked. An auth error makes it renew the token and retry the request exactly once.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from ioagent import USER_AGENT
from ioagent.kraken.errors import (
    REAUTH_CODES,
    ApiChanged,
    AuthFailed,
    KrakenError,
    RateLimited,
    TransientError,
    classify_error,
    error_code,
    error_description,
    error_path_key,
    schema_error,
    server_text,
)
from ioagent.logs import get_logger

_log = get_logger(__name__)
_OPERATION = re.compile(r"\b(?:query|mutation)\s+([A-Za-z_][A-Za-z0-9_]*)")
_PERSISTENT_REAUTH = frozenset({"KT-CT-1111", "KT-CT-1143"})


class TokenProvider(Protocol):
    async def token(self) -> str: ...

    def invalidate(self, rejected: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True, repr=False)
class GraphQLResult:
    """``data`` (never None; empty when the server sent none) and the ``errors`` array."""

    data: dict[str, Any]
    errors: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        # Names and codes only: ``data`` of an obtainKrakenToken answer holds the JWT and the
        # refresh token, and a repr ends up in logs and tracebacks.
        codes = [error_code(error) for error in self.errors]
        return f"GraphQLResult(keys={sorted(self.data)!r}, errors={codes!r})"

    def errors_for(self, key: str, field_name: str | None = None) -> list[dict[str, Any]]:
        """Errors that belong to response key ``key`` (or its field name), or to no key at all."""
        return [
            error
            for error in self.errors
            if error_path_key(error) in (None, key, field_name or key)
        ]

    def error_for(self, key: str, field_name: str | None = None) -> KrakenError | None:
        errors = self.errors_for(key, field_name)
        return classify_error(errors[0]) if errors else None

    def require(self, key: str) -> Any:
        """The value under ``key``; raises the matching error when it is missing."""
        value = self.data.get(key)
        if value is None:
            error = self.error_for(key)
            if error is not None:
                raise error
        return value


def operation_name(query: str) -> str:
    match = _OPERATION.search(query)
    return match.group(1) if match else "anonymous"


def _auth_error(errors: list[dict[str, Any]]) -> dict[str, Any] | None:
    for error in errors:
        if error_code(error) in REAUTH_CODES:
            return error
    return None


def _auth_error_code(errors: list[dict[str, Any]]) -> str | None:
    error = _auth_error(errors)
    return error_code(error) if error is not None else None


class Transport:
    """Posts GraphQL documents to ``api_url`` over one :class:`aiohttp.ClientSession`."""

    def __init__(
        self,
        api_url: str,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        tokens: TokenProvider | None = None,
    ) -> None:
        self.api_url = api_url
        self.tokens = tokens
        self._timeout = aiohttp.ClientTimeout(
            sock_connect=connect_timeout,
            sock_read=read_timeout,
            total=connect_timeout + read_timeout + 5.0,
        )
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"Transport({self.api_url!r})"

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def execute(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        authenticated: bool = True,
        may_retry: Callable[[], bool] | None = None,
    ) -> GraphQLResult:
        """Run one GraphQL document; see the module docstring for what raises.

        ``may_retry`` is asked before the one retry after a refused token: a poll's retry is
        another planned-dispatch query, so the caller's call budget must allow it.
        """
        name = operation_name(query)
        jwt = await self._token() if authenticated else None
        status, body = await self._post(name, query, variables, jwt)
        result = self._interpret(name, status, body, retrying_auth=authenticated)
        if result is not None:
            return result
        # The token was refused: renew it once and retry once.
        if self.tokens is not None:
            self.tokens.invalidate(jwt)
        if may_retry is not None and not may_retry():
            raise TransientError(
                f"Kraken API refused the token ({name}); not retried: the call budget is used up",
                code="auth_retry_deferred",
            )
        _log.info("kraken_reauthenticating", operation=name)
        jwt = await self._token()
        status, body = await self._post(name, query, variables, jwt)
        retried = self._interpret(name, status, body, retrying_auth=False)
        if retried is None:  # unreachable: retrying_auth=False never asks for a retry
            raise AuthFailed(f"Kraken API refused a fresh token ({name})")
        return retried

    async def _token(self) -> str:
        if self.tokens is None:
            raise AuthFailed("no token source configured for an authenticated request")
        return await self.tokens.token()

    async def _post(
        self, name: str, query: str, variables: Mapping[str, Any] | None, jwt: str | None
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if jwt is not None:
            headers["Authorization"] = jwt
        payload = {"query": query, "variables": dict(variables or {}), "operationName": None}
        started = time.monotonic()
        try:
            async with self._client_session().post(
                self.api_url, data=json.dumps(payload), headers=headers
            ) as response:
                status = response.status
                content_type = response.content_type
                text = await response.text(errors="replace")
        except TimeoutError:
            raise TransientError(f"Kraken API timed out ({name})", code="timeout") from None
        except aiohttp.ClientError as exc:
            raise TransientError(
                f"Kraken API unreachable ({name}): {type(exc).__name__}", code="connection"
            ) from None
        _log.debug(
            "kraken_response",
            operation=name,
            status=status,
            seconds=round(time.monotonic() - started, 3),
        )
        body: Any = None
        if "html" not in content_type:
            try:
                body = json.loads(text)
            except ValueError:
                body = None
        return status, body

    def _interpret(
        self, name: str, status: int, body: Any, *, retrying_auth: bool
    ) -> GraphQLResult | None:
        """A result, an exception, or None meaning "re-authenticate and retry"."""
        errors_raw = body.get("errors") if isinstance(body, dict) else None
        errors = (
            [e for e in errors_raw if isinstance(e, dict)] if isinstance(errors_raw, list) else []
        )
        if status == 401 or (status == 200 and _auth_error_code(errors)):
            if retrying_auth:
                return None
            refused = _auth_error(errors)
            code = _auth_error_code(errors) or status
            description = error_description(refused) if refused is not None else None
            detail = f": {description}" if description else ""
            message = f"Kraken API refused a fresh token ({name}, {code}){detail}"
            if code in _PERSISTENT_REAUTH or status == 401:
                raise AuthFailed(message, code=code, description=description)
            raise TransientError(message, code=code, description=description)
        if status == 400:
            if errors:
                raise schema_error(errors, status)
            raise ApiChanged(f"Kraken API answered HTTP 400 to {name}", code=status)
        if status == 429:
            raise RateLimited(f"Kraken API rate limit (HTTP 429, {name})", code=status)
        if status == 403 and not errors:
            # The CDN answers an IP it throttles with an HTML 403 page.
            raise TransientError(
                f"Kraken API edge refused the request (HTTP 403, {name})", code=403
            )
        if status >= 500:
            raise TransientError(f"Kraken API server error (HTTP {status}, {name})", code=status)
        if status != 200 and not errors:
            raise KrakenError(f"Kraken API answered HTTP {status} to {name}", code=status)
        if not isinstance(body, dict):
            raise TransientError(
                f"Kraken API sent an unreadable answer (HTTP {status}, {name})", code=status
            )
        data = body.get("data")
        data = data if isinstance(data, dict) else {}
        if errors:
            _log.info(
                "kraken_graphql_errors",
                operation=name,
                errors=[
                    {
                        "code": error_code(e),
                        "path": error_path_key(e),
                        "message": server_text(e.get("message", "")),
                        "description": error_description(e),
                    }
                    for e in errors[:5]
                ],
            )
        if not any(value is not None for value in data.values()):
            if errors:
                raise classify_error(errors[0])
            if not data:
                raise TransientError(f"Kraken API answered {name} without data", code=status)
        return GraphQLResult(data=data, errors=errors)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying later with back-off (network, 5xx, rate limits)."""
    return isinstance(exc, TransientError | RateLimited)
