"""The HTTP control API under ``/control``: script the simulated world (see docs/simulator.md).

JSON in, JSON out. Bad input answers 400 ``{"error": ...}``, an unknown device, account or
dispatch 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from ioagent.simulator.graphql_api import STATE_KEY
from ioagent.simulator.state import SimDevice, SimulatorState
from ioagent.simulator.tariffs import PRODUCT_CODES
from ioagent.timeutil import iso_z, parse_iso

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(ValueError):
    """The request body is missing a field or has one of the wrong type."""


@web.middleware
async def control_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/control"):
        return await handler(request)
    try:
        return await handler(request)
    except LookupError as exc:
        return web.json_response({"error": str(exc).strip("'\"")}, status=404)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest("body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} is required (a string)")
    return value


def _time(body: dict[str, Any], key: str) -> datetime:
    try:
        return parse_iso(_text(body, key))
    except BadRequest:
        raise
    except ValueError as exc:
        raise BadRequest(f"{key!r} must be an ISO-8601 time with an offset: {exc}") from exc


def _number(body: dict[str, Any], key: str, default: float | None = None) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{key!r} is required (a number)")
    return float(value)


def _optional_number(body: dict[str, Any], key: str) -> float | None:
    return None if body.get(key) is None else _number(body, key)


def _flag(body: dict[str, Any], key: str, default: bool | None = None) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{key!r} is required (true or false)")
    return value


def _state(request: web.Request) -> SimulatorState:
    state = request.app[STATE_KEY]
    state.advance()
    return state


def _device(state: SimulatorState, body: dict[str, Any]) -> SimDevice:
    return state.device(_text(body, "device_id"))


def _ok(**extra: Any) -> web.Response:
    return web.json_response({"ok": True, **extra})


async def get_state(request: web.Request) -> web.StreamResponse:
    return web.json_response(_state(request).snapshot())


async def add_dispatch(request: web.Request) -> web.StreamResponse:
    state, body = _state(request), await _body(request)
    device = _device(state, body)
    item = state.add_dispatch(
        device,
        _time(body, "start"),
        _time(body, "end"),
        str(body.get("type") or "SMART").upper(),
        _optional_number(body, "kwh"),
    )
    return _ok(start=iso_z(item.start), end=iso_z(item.end), type=item.type, kwh=item.kwh)


async def remove_dispatch(request: web.Request) -> web.StreamResponse:
    state, body = _state(request), await _body(request)
    state.remove_dispatch(_device(state, body), _time(body, "start"))
    return _ok()


async def shift_dispatch(request: web.Request) -> web.StreamResponse:
    state, body = _state(request), await _body(request)
    item = state.shift_dispatch(
        _device(state, body),
        _time(body, "start"),
        _time(body, "new_start"),
        _time(body, "new_end"),
    )
    return _ok(start=iso_z(item.start), end=iso_z(item.end))


async def clear_dispatches(request: web.Request) -> web.StreamResponse:
    state, body = _state(request), await _body(request)
    state.clear_dispatches(_device(state, body))
    return _ok()


async def add_completed(request: web.Request) -> web.StreamResponse:
    state, body = _state(request), await _body(request)
    # Kraken sends meta.source null on completed records: that is the default here too.
    source = body.get("source")
    location = body.get("location", "AT_HOME")
    if source is not None and not isinstance(source, str):
        raise BadRequest("'source' must be a string or null")
    if location is not None and not isinstance(location, str):
        raise BadRequest("'location' must be a string or null")
    item = state.add_completed(
        _text(body, "account"),
        _time(body, "start"),
        _time(body, "end"),
        _number(body, "kwh"),
        source,
        location,
    )
    return _ok(start=iso_z(item.start), end=iso_z(item.end))


async def add_account(request: web.Request) -> web.StreamResponse:
    state, body = _state(request), await _body(request)
    number, api_key = _text(body, "number"), _text(body, "api_key")
    if number in state.accounts:
        state.share_account(number, api_key)
    else:
        state.add_account(number, api_key)
    # Account numbers only: the keys stay out of every control answer.
    return _ok(accounts=state.accounts_for_key(api_key))


async def plug(request: web.Request) -> web.StreamResponse:
    state, body = _state(request), await _body(request)
    device = _device(state, body)
    state.plug(device, _flag(body, "plugged"))
    return _ok(planned=len(device.planned))


async def set_soc(request: web.Request) -> web.StreamResponse:
    state, body = _state(request), await _body(request)
    device = _device(state, body)
    state.set_soc(device, _number(body, "soc"))
    return _ok(planned=len(device.planned))


async def set_device_state(request: web.Request) -> web.StreamResponse:
    state, body = _state(request), await _body(request)
    state.set_device_state(_device(state, body), _text(body, "state"))
    return _ok()


async def expire_tokens(request: web.Request) -> web.StreamResponse:
    state, body = _state(request), await _body(request)
    state.expire_tokens(refresh=_flag(body, "refresh", False))
    return _ok()


async def get_calls(request: web.Request) -> web.StreamResponse:
    return web.json_response(_state(request).calls())


async def reset_calls(request: web.Request) -> web.StreamResponse:
    _state(request).reset_calls()
    return _ok()


async def add_fault(request: web.Request) -> web.StreamResponse:
    state, body = _state(request), await _body(request)
    count = body.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int):
        raise BadRequest("'count' must be an integer")
    fault = state.add_fault(
        _text(body, "kind"),
        count,
        include_auth=_flag(body, "include_auth", False),
        delay=_number(body, "delay", 60.0),
        field=str(body.get("field") or "flexPlannedDispatches"),
    )
    return _ok(kind=fault.kind, count=fault.remaining)


async def clear_faults(request: web.Request) -> web.StreamResponse:
    _state(request).clear_faults()
    return _ok()


async def set_time(request: web.Request) -> web.StreamResponse:
    state, body = _state(request), await _body(request)
    now = state.set_time_offset(_number(body, "offset_seconds"))
    return _ok(now=iso_z(now))


def add_control_routes(app: web.Application) -> None:
    app.router.add_get("/control/state", get_state)
    app.router.add_post("/control/dispatches", add_dispatch)
    app.router.add_post("/control/dispatches/remove", remove_dispatch)
    app.router.add_post("/control/dispatches/shift", shift_dispatch)
    app.router.add_post("/control/dispatches/clear", clear_dispatches)
    app.router.add_post("/control/completed", add_completed)
    app.router.add_post("/control/accounts", add_account)
    app.router.add_post("/control/plug", plug)
    app.router.add_post("/control/soc", set_soc)
    app.router.add_post("/control/device_state", set_device_state)
    app.router.add_post("/control/tokens/expire", expire_tokens)
    app.router.add_get("/control/calls", get_calls)
    app.router.add_post("/control/calls/reset", reset_calls)
    app.router.add_post("/control/faults", add_fault)
    app.router.add_delete("/control/faults", clear_faults)
    app.router.add_post("/control/time", set_time)
    add_tariff_control_routes(app)


# --- products and charging (issue 15): kept in this separate block --------------------------------


async def migrate_account(request: web.Request) -> web.StreamResponse:
    """Move an account to another product at ``at`` (default now), as Octopus does."""
    state, body = _state(request), await _body(request)
    product = _text(body, "product")
    if product not in PRODUCT_CODES:
        raise ValueError(f"product must be one of {', '.join(PRODUCT_CODES)}")
    at = _time(body, "at") if body.get("at") else state.now()
    state.migrate(_text(body, "account"), product, at)
    return _ok(agreements=state.tariffs.snapshot().get(_text(body, "account"), []))


async def set_dispatch_draws(request: web.Request) -> web.StreamResponse:
    """``draws: false`` makes a planned slot one in which the car never charges."""
    state, body = _state(request), await _body(request)
    item = state.set_draws(_device(state, body), _time(body, "start"), _flag(body, "draws", False))
    return _ok(start=iso_z(item.start), draws=item.draws)


async def set_rate(request: web.Request) -> web.StreamResponse:
    """Change a four-rate feed's value, or make a feed fail (``fail: true``)."""
    state, body = _state(request), await _body(request)
    feed = _text(body, "feed")
    if _flag(body, "fail", False):
        state.tariffs.failing_feeds.add(feed)
    else:
        state.tariffs.failing_feeds.discard(feed)
        if body.get("value") is not None:
            state.tariffs.rate_overrides[feed] = _number(body, "value")
    return _ok(feed=feed)


def add_tariff_control_routes(app: web.Application) -> None:
    app.router.add_post("/control/agreements", migrate_account)
    app.router.add_post("/control/dispatches/draws", set_dispatch_draws)
    app.router.add_post("/control/rates", set_rate)
