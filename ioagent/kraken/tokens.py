"""Kraken JWTs: log in with the API key, refresh early, one refresh at a time.

A JWT lives about an hour; its refresh token lives until an absolute instant
(``refreshExpiresIn`` is a Unix timestamp) and using it does not extend it. After that the API key
logs in again. A token due for refresh but still valid is handed out at once while the refresh
runs in the background, so a poll never waits for a refresh it does not need.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
from pydantic import SecretStr

from ioagent.aio import cancel_and_wait
from ioagent.kraken.errors import BAD_API_KEY, AuthFailed, KrakenError
from ioagent.kraken.types import Token
from ioagent.logs import get_logger, register_secret
from ioagent.timeutil import Clock, utc_now

ObtainToken = Callable[[dict[str, str]], Awaitable[Mapping[str, Any]]]
"""Runs ``obtainKrakenToken(input: ...)`` and returns its payload (token, refreshToken, ...)."""

REFRESH_MARGIN = timedelta(minutes=5)
"""Refresh this long before the JWT's ``exp``."""
EXPIRY_SKEW = timedelta(seconds=30)
"""A JWT this close to ``exp`` is treated as expired: the request could arrive after it."""
FALLBACK_LIFETIME = timedelta(minutes=30)
"""Assumed lifetime of a JWT whose ``exp`` cannot be read."""
BACKGROUND_RETRY = timedelta(seconds=60)
"""After a failed background refresh, wait this long before trying again in the background."""
_UNIX_TIMESTAMP_FLOOR = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_log = get_logger(__name__)


def jwt_expiry(token: str, now: datetime) -> datetime:
    """The ``exp`` of a JWT, read without verifying it (only the server can verify it)."""
    try:
        claims = pyjwt.decode(token, options={"verify_signature": False})
        return datetime.fromtimestamp(float(claims["exp"]), UTC)
    except (pyjwt.PyJWTError, KeyError, TypeError, ValueError, OverflowError, OSError):
        _log.warning("kraken_token_without_exp", assumed_minutes=FALLBACK_LIFETIME.seconds // 60)
        return now + FALLBACK_LIFETIME


def refresh_expiry(value: Any, now: datetime) -> datetime | None:
    """``refreshExpiresIn`` as an instant; a small number is read as seconds from now."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        if value >= _UNIX_TIMESTAMP_FLOOR:
            return datetime.fromtimestamp(float(value), UTC)
        return now + timedelta(seconds=float(value))
    except (OverflowError, ValueError, OSError):
        return None


def token_from_payload(payload: Mapping[str, Any], now: datetime) -> Token:
    """Build a :class:`Token` from an ``obtainKrakenToken`` payload, registering its secrets."""
    jwt_text = payload.get("token")
    if not isinstance(jwt_text, str) or not jwt_text:
        raise KrakenError("obtainKrakenToken returned no token")
    register_secret(jwt_text)
    refresh = payload.get("refreshToken")
    refresh_token = refresh if isinstance(refresh, str) and refresh else None
    register_secret(refresh_token)
    return Token(
        jwt=jwt_text,
        expires_at=jwt_expiry(jwt_text, now),
        refresh_token=refresh_token,
        refresh_expires_at=refresh_expiry(payload.get("refreshExpiresIn"), now)
        if refresh_token
        else None,
    )


class TokenSource:
    """Hands out a valid JWT; at most one login or refresh runs at a time."""

    def __init__(
        self,
        obtain: ObtainToken,
        api_key: SecretStr,
        *,
        clock: Clock = utc_now,
        refresh_margin: timedelta = REFRESH_MARGIN,
    ) -> None:
        self._obtain = obtain
        self._api_key = api_key
        register_secret(api_key.get_secret_value())
        self._clock = clock
        self._margin = refresh_margin
        self._token: Token | None = None
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._background_not_before: datetime | None = None

    def __repr__(self) -> str:
        state = "none" if self._token is None else f"expires_at={self._token.expires_at}"
        return f"TokenSource({state})"

    @property
    def current(self) -> Token | None:
        """The token held now (its repr hides the secrets), whether or not it is still valid."""
        return self._token

    @property
    def expires_at(self) -> datetime | None:
        return self._token.expires_at if self._token else None

    @property
    def refresh_due_at(self) -> datetime | None:
        """When the current JWT should be refreshed; None before the first login."""
        return self._token.expires_at - self._margin if self._token else None

    def _usable(self, token: Token | None, now: datetime) -> bool:
        return token is not None and now < token.expires_at - EXPIRY_SKEW

    async def token(self) -> str:
        """A JWT that is valid now. Logs in (or refreshes) only when there is none."""
        now = self._clock()
        current = self._token
        if current is not None and self._usable(current, now):
            due = self.refresh_due_at
            if due is not None and now >= due:
                self._start_background_refresh(now)
            return current.jwt
        async with self._lock:
            current = self._token
            if current is not None and self._usable(current, self._clock()):
                return current.jwt
            return (await self._renew()).jwt

    async def refresh_if_due(self) -> bool:
        """Refresh now if the refresh is due (for a scheduler); True when a refresh happened."""
        due = self.refresh_due_at
        if due is not None and self._clock() < due:
            return False
        async with self._lock:
            due = self.refresh_due_at
            if due is not None and self._clock() < due:
                return False
            await self._renew()
            return True

    def invalidate(self, rejected: str | None = None) -> None:
        """Forget the JWT after the API refused it, so the next :meth:`token` renews it.

        With ``rejected`` given, only that JWT is forgotten: if another caller has already
        renewed it, the new one is kept.
        """
        current = self._token
        if current is None or (rejected is not None and current.jwt != rejected):
            return
        # Keep the refresh token; only the JWT is known to be bad.
        self._token = Token(
            jwt=current.jwt,
            expires_at=_EPOCH,
            refresh_token=current.refresh_token,
            refresh_expires_at=current.refresh_expires_at,
        )

    async def close(self) -> None:
        task, self._background = self._background, None
        if task is not None and not task.done():
            # Not ``suppress(CancelledError)`` around ``await task``: that would also swallow
            # a cancellation of the caller, which then would not stop.
            await cancel_and_wait(task, grace=1.0, bound=2.0)

    def _start_background_refresh(self, now: datetime) -> None:
        if self._lock.locked() or (self._background is not None and not self._background.done()):
            return
        if self._background_not_before is not None and now < self._background_not_before:
            return
        self._background = asyncio.get_running_loop().create_task(self._background_refresh())

    async def _background_refresh(self) -> None:
        try:
            await self.refresh_if_due()
            self._background_not_before = None
        except KrakenError as exc:
            self._background_not_before = self._clock() + BACKGROUND_RETRY
            _log.warning("kraken_token_refresh_failed", error=str(exc), code=exc.code)
        except Exception as exc:  # a background task has nobody to raise to
            self._background_not_before = self._clock() + BACKGROUND_RETRY
            _log.error("kraken_token_refresh_crashed", error=type(exc).__name__)

    async def _renew(self) -> Token:
        """Refresh with the refresh token while it lasts, else log in with the API key.

        Must be called with the lock held.
        """
        now = self._clock()
        current = self._token
        if (
            current is not None
            and current.refresh_token
            and (current.refresh_expires_at is None or now < current.refresh_expires_at)
        ):
            try:
                token = token_from_payload(
                    await self._obtain({"refreshToken": current.refresh_token}), self._clock()
                )
                self._token = token
                _log.debug("kraken_token_refreshed", expires_at=token.expires_at.isoformat())
                return token
            except AuthFailed as exc:
                # KT-CT-1134/1135 (expired/invalid refresh token), or any refusal of it.
                _log.info(
                    "kraken_refresh_token_refused", code=exc.code, description=exc.description
                )
        return await self._login()

    async def _login(self) -> Token:
        try:
            payload = await self._obtain({"APIKey": self._api_key.get_secret_value()})
        except AuthFailed as exc:
            self._token = None
            # Kraken's own reason ("Authentication failed.") is in the description.
            reason = f": {exc.description}" if exc.description else ""
            raise AuthFailed(
                f"Octopus refused the API key (check octopus.api_key){reason}",
                code=exc.code or BAD_API_KEY,
                description=exc.description,
            ) from None
        token = token_from_payload(payload, self._clock())
        self._token = token
        _log.debug("kraken_logged_in", expires_at=token.expires_at.isoformat())
        return token
