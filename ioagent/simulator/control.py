"""A small async client for the simulator's control API, for tests and the demo.

async with SimulatorControl(sim.control_url) as control:
    await control.plug(DEFAULT_EV_ID, True)
    await control.add_fault("kt_4340", count=2)
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any

import aiohttp

from ioagent.timeutil import iso_z


class ControlError(Exception):
    """The control API refused a request (HTTP 4xx/5xx); the message is its ``error`` text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _when(value: datetime | str) -> str:
    return value if isinstance(value, str) else iso_z(value)


class SimulatorControl:
    """One method per route of the control API; each returns the decoded JSON answer."""

    def __init__(self, control_url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.control_url = control_url.rstrip("/")
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> SimulatorControl:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        async with self._session.request(method, self.control_url + path, json=body) as response:
            data = await response.json(content_type=None)
            if response.status >= 400:
                message = data.get("error") if isinstance(data, dict) else None
                raise ControlError(response.status, str(message or response.reason))
            return data

    async def state(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/state")
        return result

    async def add_dispatch(
        self,
        device_id: str,
        start: datetime | str,
        end: datetime | str,
        type: str = "SMART",
        kwh: float | None = None,
    ) -> dict[str, Any]:
        body = {
            "device_id": device_id,
            "start": _when(start),
            "end": _when(end),
            "type": type,
            "kwh": kwh,
        }
        result: dict[str, Any] = await self._request("POST", "/dispatches", body)
        return result

    async def remove_dispatch(self, device_id: str, start: datetime | str) -> None:
        await self._request(
            "POST", "/dispatches/remove", {"device_id": device_id, "start": _when(start)}
        )

    async def shift_dispatch(
        self,
        device_id: str,
        start: datetime | str,
        new_start: datetime | str,
        new_end: datetime | str,
    ) -> None:
        body = {
            "device_id": device_id,
            "start": _when(start),
            "new_start": _when(new_start),
            "new_end": _when(new_end),
        }
        await self._request("POST", "/dispatches/shift", body)

    async def clear_dispatches(self, device_id: str) -> None:
        await self._request("POST", "/dispatches/clear", {"device_id": device_id})

    async def add_completed(
        self,
        account: str,
        start: datetime | str,
        end: datetime | str,
        kwh: float,
        source: str | None = None,
        location: str | None = "AT_HOME",
    ) -> None:
        body = {
            "account": account,
            "start": _when(start),
            "end": _when(end),
            "kwh": kwh,
            "source": source,
            "location": location,
        }
        await self._request("POST", "/completed", body)

    async def add_account(self, number: str, api_key: str) -> list[str]:
        """Let ``api_key`` see account ``number`` (created, without devices, if new).

        Returns every account the key sees now.
        """
        result = await self._request("POST", "/accounts", {"number": number, "api_key": api_key})
        return [str(n) for n in result["accounts"]]

    async def plug(self, device_id: str, plugged: bool) -> dict[str, Any]:
        result: dict[str, Any] = await self._request(
            "POST", "/plug", {"device_id": device_id, "plugged": plugged}
        )
        return result

    async def set_soc(self, device_id: str, soc: float) -> dict[str, Any]:
        result: dict[str, Any] = await self._request(
            "POST", "/soc", {"device_id": device_id, "soc": soc}
        )
        return result

    async def set_device_state(self, device_id: str, state: str) -> None:
        await self._request("POST", "/device_state", {"device_id": device_id, "state": state})

    async def expire_tokens(self, refresh: bool = False) -> None:
        await self._request("POST", "/tokens/expire", {"refresh": refresh})

    async def calls(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/calls")
        return result

    async def reset_calls(self) -> None:
        await self._request("POST", "/calls/reset", {})

    async def add_fault(
        self,
        kind: str,
        count: int = 1,
        *,
        include_auth: bool = False,
        delay: float | None = None,
        field: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"kind": kind, "count": count, "include_auth": include_auth}
        if delay is not None:
            body["delay"] = delay
        if field is not None:
            body["field"] = field
        await self._request("POST", "/faults", body)

    async def clear_faults(self) -> None:
        await self._request("DELETE", "/faults")

    async def set_time_offset(self, offset_seconds: float) -> datetime:
        result = await self._request("POST", "/time", {"offset_seconds": offset_seconds})
        return datetime.fromisoformat(str(result["now"]).replace("Z", "+00:00"))
