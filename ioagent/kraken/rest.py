"""Octopus's public products REST API (no login): the unit rates of a tariff.

``GET {rest}/v1/products/{product}/electricity-tariffs/{tariff}/{feed}/`` answers
``{"count","next","previous","results":[...]}``; ``next`` pages are followed up to
:data:`MAX_PAGES`. A feed that does not exist for the tariff (404, such as
``standard-unit-rates`` on a four-rate tariff) reads as empty.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from ioagent import USER_AGENT
from ioagent.kraken.errors import TransientError
from ioagent.kraken.types import UnitRate, parse_unit_rates
from ioagent.timeutil import iso_z

LIVE_REST_URL = "https://api.octopus.energy"
MAX_PAGES = 5


class ProductsClient:
    """Reads rate feeds over one :class:`aiohttp.ClientSession`; use as ``async with``."""

    def __init__(self, rest_url: str, *, connect_timeout: float = 10.0, read_timeout: float = 30.0):
        self.rest_url = rest_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(
            sock_connect=connect_timeout,
            sock_read=read_timeout,
            total=connect_timeout + read_timeout + 5.0,
        )
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"ProductsClient({self.rest_url!r})"

    async def __aenter__(self) -> ProductsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
        return self._session

    def feed_url(self, product: str, tariff: str, feed: str) -> str:
        return (
            f"{self.rest_url}/v1/products/{quote(product, safe='')}/electricity-tariffs/"
            f"{quote(tariff, safe='')}/{feed}/"
        )

    async def unit_rates(
        self,
        product: str,
        tariff: str,
        feed: str,
        *,
        period_from: datetime | None = None,
        period_to: datetime | None = None,
    ) -> list[UnitRate]:
        params: dict[str, str] = {}
        if period_from is not None:
            params["period_from"] = iso_z(period_from)
        if period_to is not None:
            params["period_to"] = iso_z(period_to)
        url: str | None = self.feed_url(product, tariff, feed)
        results: list[Any] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            page = await self._get(url, params)
            if page is None:
                return []
            results.extend(page.get("results") or [])
            following = page.get("next")
            url = following if isinstance(following, str) and following else None
            params = {}  # the next link carries the query
        return parse_unit_rates(results)

    async def _get(self, url: str, params: dict[str, str]) -> dict[str, Any] | None:
        try:
            async with self._client().get(url, params=params) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise TransientError(
                        f"Octopus products API answered HTTP {response.status} for {feed_name(url)}",
                        code=f"http_{response.status}",
                    )
                body = await response.json(content_type=None)
        except TimeoutError:
            raise TransientError("Octopus products API timed out", code="timeout") from None
        except aiohttp.ClientError as exc:
            raise TransientError(
                f"Octopus products API unreachable: {type(exc).__name__}", code="network"
            ) from None
        except ValueError:
            raise TransientError("Octopus products API sent no JSON", code="bad_json") from None
        if not isinstance(body, dict):
            raise TransientError("Octopus products API sent an unexpected answer", code="bad_json")
        return body


def feed_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


__all__ = ["LIVE_REST_URL", "MAX_PAGES", "ProductsClient"]
